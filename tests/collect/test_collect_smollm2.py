"""The collection with the real embedded model (SmolLM2-135M-Instruct as model and teacher) on a
few demo problems: a run killed by SIGKILL in the middle of `teach` and resumed writes the same
files, byte for byte, as an uninterrupted run. Slow (minutes on 2 cores)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collect_helpers import outputs  # noqa: E402
from process_helpers import kill_once_written  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(REPO / "scripts" / "collect.py"), "--config=" + str(REPO / "configs" / "collect.py") + ":demo"]
OVERRIDES = ["--config.data.max_problems=4", "--config.sample.n=2", "--config.sample.max_new_tokens=128",
             "--config.sample.problems_per_chunk=1", "--config.teacher.n=2", "--config.teacher.max_new_tokens=160",
             "--config.sample.max_batch=8", "--config.execute.workers=2", "--config.export.tfds=False", "--noprogress"]
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")



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
    kill_once_written(proc, part, 1800)
    resumed = subprocess.run([*RUN, f"--workdir={killed}", *OVERRIDES], env=ENV, cwd=REPO, capture_output=True,
                             text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outputs(killed) == outputs(once)
