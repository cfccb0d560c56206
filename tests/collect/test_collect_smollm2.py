"""The collection with the real embedded model (SmolLM2-135M-Instruct as model and teacher) on a
few demo problems: a run killed by SIGKILL in the middle of `teach` and resumed writes the same
files, byte for byte, as an uninterrupted run. Slow (minutes on 2 cores)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(REPO / "scripts" / "collect.py"), "--config=" + str(REPO / "configs" / "collect.py") + ":demo"]
OVERRIDES = ["--config.data.max_problems=4", "--config.sample.n=2", "--config.sample.max_new_tokens=128",
             "--config.sample.problems_per_chunk=1", "--config.teacher.n=2", "--config.teacher.max_new_tokens=160",
             "--config.sample.max_batch=8", "--config.execute.workers=2", "--config.export.tfds=False", "--noprogress"]
OUTPUTS = ("sft.jsonl", "rl.jsonl", "stats.json")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")


def outputs(workdir):
    return {name: (Path(workdir) / name).read_bytes() for name in OUTPUTS}


@pytest.mark.slow
def test_real_model_resume_after_sigkill_in_teach(tmp_path):
    once = tmp_path / "once"
    proc = subprocess.run([*RUN, f"--workdir={once}", *OVERRIDES], env=ENV, cwd=REPO, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    taught = (once / "teach" / "part-00000.jsonl").read_text().splitlines()
    assert taught, "the model wrote no wrong solution to teach on; the test needs one"

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*RUN, f"--workdir={killed}", *OVERRIDES], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    part = killed / "teach" / "part-00000.jsonl"
    deadline = time.time() + 1800
    try:
        while not (part.exists() and part.stat().st_size > 0):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = subprocess.run([*RUN, f"--workdir={killed}", *OVERRIDES], env=ENV, cwd=REPO, capture_output=True,
                             text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outputs(killed) == outputs(once)
