"""The README's evaluation command on the embedded SmolLM2, made small (2 HumanEval problems,
2 samples, one round of both methods, 48 tokens): a real model through the sampler, the pool and
every output a person reads."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_embedded_smollm2_evaluation_writes_every_output(tmp_path):
    workdir = tmp_path / "eval"
    cmd = [sys.executable, str(REPO / "scripts" / "evaluate.py"), "--model=embedded:smollm2", "--benchmark=humaneval",
           "--n=2", "--k=1", "--rounds=1", "--limit=2", "--max_new_tokens=48", f"--workdir={workdir}", "--noprogress",
           "--workers=2", "--allow_unsandboxed"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((workdir / "results.json").read_text())
    bench = results["benchmarks"]["humaneval"]
    assert bench["problems"] == 2 and bench["samples"] == 4
    rounds = bench["rounds"]
    assert set(rounds) == {"init", "refine", "explain_refine"} and len(rounds["refine"]) == 2
    assert rounds["init"][0]["passed"] + rounds["init"][0]["wrong"] == 4 and 0 <= rounds["init"][0]["pass@1"] <= 1
    throughput = results["throughput"]
    assert throughput["samples_per_s"] > 0 and throughput["generated_tokens_per_s"] > 0

    table = (workdir / "table.md").read_text()
    assert "Init" in table and "HumanEval" in table
    for png in ("pass_at_1_by_round.png", "success_rate.png"):
        assert (workdir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    initial = [json.loads(line) for line in (workdir / "samples" / "humaneval" / "round0.jsonl").open()]
    assert len(initial) == 4 and {s["task_id"] for s in initial} == {"HumanEval/0", "HumanEval/1"}
    assert all(set(s) == {"task_id", "completion_id", "solution"} for s in initial)  # EvalPlus format
