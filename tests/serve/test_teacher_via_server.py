"""The `openai:` teacher of the collection pipeline end to end against `scripts/serve.py`: a
collection run (scripted policy for the initial samples) whose teacher is our server on a loopback
port, reached over real HTTP by the official client; requests arrive concurrently and are batched."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.serve.serve_helpers import REPO, get_json, server_env, start_ours

NAME = "tiny-teacher"


def test_collection_with_the_openai_teacher_on_our_server(tiny_model_dir, tmp_path):
    proc, base = start_ours(tiny_model_dir, f"--served_model_name={NAME}", "--max_batch=8",
                            "--max_prompt_len=448", "--max_tokens_limit=64")
    try:
        workdir = tmp_path / "collect"
        run = subprocess.run(
            [sys.executable, "tests/collect/run_scripted_collect.py", "--config=configs/collect.py:demo",
             f"--workdir={workdir}", "--config.data.max_problems=4", "--config.sample.n=3",
             "--config.sample.problems_per_chunk=4", "--config.teacher.n=2", "--config.teacher.max_new_tokens=32",
             f"--config.teacher.kind=openai:{NAME}", f"--config.teacher.base_url={base}",
             "--config.teacher.api_key_env=", "--config.teacher.max_concurrency=4",
             "--config.execute.workers=2", "--config.export.tfds=False", "--noprogress"],
            env=server_env(), cwd=REPO, capture_output=True,
            text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        stats = json.loads((workdir / "stats.json").read_text())
        total = stats["total"]
        assert total["wrong"] > 0 and total["answers"] == 2 * total["wrong"]
        assert stats["tokens"]["teacher"]["prompt"] > 0 and stats["tokens"]["teacher"]["completion"] > 0
        taught = [json.loads(line) for line in (workdir / "teach" / "part-00000.jsonl").read_text().splitlines()]
        assert len(taught) == total["answers"] and any(t["text"] for t in taught)
        # a random tiny model writes no ```python block: each such answer is a counted failure
        assert total["unparsable"] == sum(bool(t["error"]) for t in taught)
        served = get_json(base + "/stats")
        assert served["generate_calls"] < total["wrong"], served  # concurrent requests shared calls
    finally:
        proc.stop()
        proc.remove_log()
