"""The third-party reference: llama-cpp-python's OpenAI server on the embedded SmolLM2 GGUF,
queried with the same `openai` client as ours (bench/serve.py compares the two). Slow: the
llama_cpp extra (`pip install -e .[llama_cpp]`) builds llama.cpp from source."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.serve.serve_helpers import client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_cpp_server():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable; install the extra: pip install 'llama-cpp-python[server]==0.3.36'")
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.serve.launch import ServerProcess, free_port
    port = free_port()
    proc = ServerProcess([sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
                          "--host", "127.0.0.1", "--port", str(port)])
    base = f"http://127.0.0.1:{port}/v1"
    proc.wait_ready(base + "/models", timeout=300)
    yield base
    proc.stop()
    proc.remove_log()


def test_llama_cpp_server_chat_completion(llama_cpp_server):
    api = client(llama_cpp_server, timeout=300)
    model = api.models.list().data[0].id
    out = api.chat.completions.create(model=model, max_tokens=48, temperature=0,
                                      messages=[{"role": "user", "content": "Write a Python function that adds two numbers."}])
    text = out.choices[0].message.content
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens > 0 and text.strip()
    assert "def " in text or "return" in text or "+" in text, text


def test_ours_on_the_same_gguf_answers_like_a_chat_model(tmp_path):
    """Our server on the embedded model (what bench/serve.py times against llama.cpp)."""
    from tests.serve.serve_helpers import start_ours
    proc, base = start_ours("embedded:smollm2", "--served_model_name=smollm2", "--max_batch=4", timeout=600)
    try:
        out = client(base, timeout=600).chat.completions.create(
            model="smollm2", max_tokens=48, temperature=0,
            messages=[{"role": "user", "content": "Write a Python function that adds two numbers."}])
    finally:
        proc.stop()
        proc.remove_log()
    text = out.choices[0].message.content
    assert out.usage.completion_tokens > 0 and ("def " in text or "return" in text), text


def test_llama_cpp_server_as_the_collection_teacher(llama_cpp_server, tmp_path):
    """A third-party implementation of the protocol as the `openai:` teacher for a few problems."""
    import json
    import subprocess

    from tests.serve.serve_helpers import REPO, server_env
    model = client(llama_cpp_server).models.list().data[0].id
    workdir = tmp_path / "collect"
    run = subprocess.run(
        [sys.executable, "tests/collect/run_scripted_collect.py", "--config=configs/collect.py:demo",
         f"--workdir={workdir}", "--config.data.max_problems=3", "--config.sample.n=3", "--config.teacher.n=2",
         "--config.teacher.max_new_tokens=96", f"--config.teacher.kind=openai:{model}",
         f"--config.teacher.base_url={llama_cpp_server}", "--config.teacher.api_key_env=",
         "--config.execute.workers=2", "--config.export.tfds=False", "--noprogress"],
        env=server_env(), cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    stats = json.loads((workdir / "stats.json").read_text())
    total = stats["total"]
    assert total["wrong"] > 0 and total["answers"] == 2 * total["wrong"]
    assert stats["tokens"]["teacher"]["completion"] > 0
    taught = [json.loads(line) for line in (workdir / "teach" / "part-00000.jsonl").read_text().splitlines()]
    assert all(t["text"] for t in taught)  # every answer came back (counted usable or not)
