"""SmolLM2-135M-Instruct end to end through `scripts/demo.py` (what `make demo` runs): real
rollouts, the sandboxed pool, CodeBLEU and MiniLM rewards, two PPO steps, a checkpoint, and an
export that transformers loads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_trains_two_steps_and_exports(tmp_path):
    from transformers import AutoModelForCausalLM
    workdir = tmp_path / "demo"
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--steps=2", f"--workdir={workdir}"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 2: reward" in proc.stdout + proc.stderr and "exported the policy" in proc.stdout
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # real rewards: tests were run, CodeBLEU and similarity computed
        assert -5.0 <= r["code_reward"] <= 5.0 and r["no_code_rate"] < 1.0
        assert r["codebleu"] == r["codebleu"] and r["updates"] > 0
    model, info = AutoModelForCausalLM.from_pretrained(workdir / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
