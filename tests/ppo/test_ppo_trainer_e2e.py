"""End-to-end PPO runs through `scripts/train.py --config=configs/rl.py:tiny`: exact resume after
SIGKILL, export of the policy alone, offline mode on the collected trajectories, and bad input
(rows without references, prompts over the budget)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ledex_jax.serve.launch import free_port

REPO = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(REPO / "configs" / "rl.py") + ":tiny"]
OVERRIDES = ["--config.train.num_steps=4", "--config.checkpoint.every_steps=2", "--config.checkpoint.keep=5"]
TIMED_FIELDS = {"generate_s", "score_s", "stats_s", "train_s", "scoring_hidden", "step_s", "tokens_per_s"}


def env(devices=1):
    return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def run_train(workdir, extra=(), devices=1, timeout=600):
    return subprocess.run([*TRAIN, f"--workdir={workdir}", *OVERRIDES, *extra], env=env(devices), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def trace(workdir):
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMED_FIELDS} for row in rows]


def checkpoint_arrays(workdir, step=4):
    """Every array of the checkpoint (policy, value head, optimizer), on this process's first
    device whatever topology saved it."""
    import orbax.checkpoint as ocp
    import jax
    keys = ("params", "value_head", "optimizer")
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.CheckpointManager(Path(workdir) / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True),
                               item_handlers={k: ocp.StandardCheckpointHandler() for k in keys}) as m:
        meta = m.item_metadata(step)
        target = {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), meta[k])
                  for k in keys}
        restored = m.restore(step, args=ocp.args.Composite(**{k: ocp.args.StandardRestore(target[k]) for k in keys}))
    return [np.asarray(x) for x in jax.tree.leaves(dict(restored))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ppo_uninterrupted")
    proc = run_train(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_run_logs_every_metric_and_reports_its_data(uninterrupted):
    rows = trace(uninterrupted)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("reward", "code_reward", "pass_rate", "kl", "beta", "entropy", "policy_loss", "value_loss",
                "clipfrac", "value_clipfrac", "explained_variance", "echo_rate", "no_code_rate"):
        assert key in rows[-1], key
    timed = json.loads((Path(uninterrupted) / "metrics.jsonl").read_text().splitlines()[-1])
    for key in TIMED_FIELDS:
        assert timed[key] >= 0, key
    assert rows[0]["beta"] == pytest.approx(0.2)  # TRL's initial KL coefficient, then adapted
    assert rows[-1]["beta"] != rows[0]["beta"]
    report = json.loads((Path(uninterrupted) / "rl_data_report.json").read_text())
    assert report["rows"] == 44 and not report["skipped"]
    assert (Path(uninterrupted) / "tensorboard").is_dir()


def test_resume_after_sigkill_is_bit_exact(uninterrupted, tmp_path):
    workdir = tmp_path / "killed"
    proc = subprocess.Popen([*TRAIN, f"--workdir={workdir}", *OVERRIDES], env=env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    try:  # kill hard as soon as step 2 is finalised
        while not (workdir / "checkpoints" / "2" / "meta").is_dir():
            assert proc.poll() is None, f"run ended before step 2: {proc.stderr.read()[-3000:]}"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (workdir / "checkpoints" / "4").exists(), "the run finished before it was killed"
    resumed = run_train(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stderr
    assert trace(workdir) == trace(uninterrupted)
    for a, b in zip(checkpoint_arrays(workdir), checkpoint_arrays(uninterrupted)):
        np.testing.assert_array_equal(a, b)


def test_two_hosts_match_one(uninterrupted, tmp_path):
    """2 processes x 2 devices (each host samples and scores its own rows on a local replica,
    trains on the global mesh) give the 1-process run's metrics and weights (2 of its 4 steps)."""
    workdir = tmp_path / "two_hosts"
    port = free_port()
    procs = [subprocess.Popen(
        [*TRAIN, f"--workdir={workdir}", *OVERRIDES, "--config.train.num_steps=2",
         "--config.distributed.initialize=True", f"--config.distributed.coordinator_address=127.0.0.1:{port}",
         "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"], env=env(devices=2), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
    ours, ref = trace(workdir), trace(uninterrupted)[:2]
    assert [r["step"] for r in ours] == [r["step"] for r in ref]
    for a, b in zip(ours, ref):
        assert set(a) == set(b)
        for key in b:  # same rollouts and rewards; losses up to the sharded sums' rounding
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5, nan_ok=True), (key, a[key], b[key])
    for a, b in zip(checkpoint_arrays(workdir, step=2), checkpoint_arrays(uninterrupted, step=2)):
        np.testing.assert_allclose(a, b, atol=1e-4)  # Adam amplifies the sums' rounding a little


def test_export_writes_the_policy_without_the_value_head(uninterrupted, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    out = tmp_path / "hf"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "export_hf.py"), f"--checkpoint={uninterrupted}",
                           f"--out={out}"], env=env(1), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = [k for f in out.glob("*.safetensors") for k in safe_open(str(f), "np").keys()]
    assert names and not any("value" in k for k in names)
    _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_offline_mode_scores_the_collected_trajectories(tmp_path):
    proc = run_train(tmp_path / "offline", ["--config.rollout.mode=offline", "--config.train.num_steps=1",
                                            "--config.rollout.max_new_tokens=256"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = trace(tmp_path / "offline")
    # the demo set's trajectories are its verified refinements: they pass and score high
    assert row["pass_rate"] == 1.0 and row["no_code_rate"] == 0.0
    assert row["code_reward"] > 2.0 and row["explanation_rows"] > 0


def _rl_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _collected_row(i, refinements, reference=""):
    return {"id": f"demo/000_sum_of_squares/s{i:03d}", "source": "demo/000_sum_of_squares", "dataset": "demo",
            "task_id": "demo/000_sum_of_squares", "problem": "Sum of squares of 1..n.",
            "wrong_code": "def sum_of_squares(n):\n    return n", "feedback": "assert sum_of_squares(3) == 14 failed",
            "fraction_passed": 0.0, "refinements": refinements, "failed": [], "reference": reference}


@pytest.mark.slow  # 55 s; `make test-all`
def test_rows_without_references_are_counted_and_skipped(tmp_path):
    fix = [{"id": "t0", "code": "def sum_of_squares(n):\n    return sum(i * i for i in range(n + 1))",
            "explanation": "range must include n"}]
    data = _rl_file(tmp_path / "rl.jsonl", [_collected_row(0, fix), _collected_row(1, []),
                                            _collected_row(2, [], reference="def sum_of_squares(n):\n    return 0")])
    proc = run_train(tmp_path / "run", ["--config.data.source=collected", f"--config.data.rl_path={data}",
                                        "--config.train.num_steps=1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "rl_data_report.json").read_text())
    assert report["rows"] == 2 and report["reference_fallback"] == 1
    (why,) = report["skipped"]
    assert "reference" in why and report["skipped"][why]["ids"] == ["demo/000_sum_of_squares/s001"]

    only_bad = _rl_file(tmp_path / "bad.jsonl", [_collected_row(1, [])])
    proc = run_train(tmp_path / "bad", ["--config.data.source=collected", f"--config.data.rl_path={only_bad}"])
    assert proc.returncode != 0 and "no trainable RL rows" in proc.stderr


@pytest.mark.slow  # 55 s; `make test-all`
def test_prompts_over_the_budget_are_counted_and_skipped(tmp_path):
    proc = run_train(tmp_path / "run", ["--config.rollout.max_prompt_len=200", "--config.train.num_steps=1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "rl_data_report.json").read_text())
    (why,) = report["skipped"]
    assert "prompt over 200 tokens" in why and 0 < report["skipped"][why]["count"] < 44
    assert report["rows"] == 44 - report["skipped"][why]["count"]
    proc = run_train(tmp_path / "none", ["--config.rollout.max_prompt_len=20"])
    assert proc.returncode != 0 and "raise config.rollout.max_prompt_len" in proc.stderr
