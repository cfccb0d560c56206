"""The collection pipeline's bookkeeping, with the scripted model (fast): outputs, Table 1 counts
recomputed from the files, resume after SIGKILL (byte-identical outputs), two processes = one,
config mismatch refused, teacher answers without code counted, the export audit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledex_jax.serve.launch import free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collect_helpers import OUTPUTS, outputs  # noqa: E402
from process_helpers import kill_once_written  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(REPO / "tests" / "collect" / "run_scripted_collect.py"),
       "--config=" + str(REPO / "configs" / "collect.py") + ":demo"]
OVERRIDES = ["--config.data.max_problems=8", "--config.sample.n=3", "--config.teacher.n=2",
             "--config.sample.problems_per_chunk=2", "--config.execute.workers=2", "--config.export.tfds=False",
             "--noprogress"]


def env(**extra):
    e = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1", **extra)
    return e


def run(workdir, *args, check=True, **env_extra):
    proc = subprocess.run([*RUN, f"--workdir={workdir}", *OVERRIDES, *args], env=env(**env_extra), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc



@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("collect") / "once"
    proc = run(workdir)
    assert "| dataset |" in proc.stdout and "|    demo |" in proc.stdout
    return workdir


def test_outputs_are_valid_and_table_counts_match_the_files(uninterrupted):
    from ledex_jax.collect import store
    from ledex_jax.data.records import read_sft_jsonl

    sft = read_sft_jsonl(uninterrupted / "sft.jsonl")
    rl = [json.loads(line) for line in (uninterrupted / "rl.jsonl").read_text().splitlines()]
    stats = json.loads((uninterrupted / "stats.json").read_text())
    row = stats["datasets"]["demo"]
    samples = store.read_stage(uninterrupted, "sample")
    executed = store.read_stage(uninterrupted, "execute")
    taught = store.read_stage(uninterrupted, "teach")
    # every path was taken: the scripted model writes right, wrong and code-less answers
    assert row["correct"] and row["wrong"] and row["wrong_refined"] and row["no_code"] and row["unparsable"]
    assert row["problems"] == 8 and row["samples"] == len(samples) == 24
    assert row["no_code"] == sum(s["code"] is None for s in samples.values())
    assert row["unique"] == len(executed)
    by_problem = {}
    for s in samples.values():
        if s["code"] is not None:
            by_problem.setdefault(s["source"], set()).add(s["code"].strip("\n"))
    assert row["unique"] == sum(map(len, by_problem.values()))
    codegen = [r for r in sft if r.format == "codegen"]
    assert row["correct"] == len(codegen) == sum(e["passed"] for e in executed.values())
    assert row["wrong"] == len(rl)
    assert row["wrong_refined"] == sum(bool(r["refinements"]) for r in rl)
    assert row["rate"] == round(100 * row["wrong_refined"] / row["wrong"], 2)
    fixes = sum(len(r["refinements"]) for r in rl)
    assert row["correct_refinements"] == fixes
    assert sum(r.format == "refine" for r in sft) == sum(r.format == "explain_refine" for r in sft) == fixes
    assert row["answers"] == len(taught) == sum(len(r["refinements"]) + len(r["failed"]) for r in rl)
    # answers without a code block are failed refinements, kept with their text, not dropped
    unparsable = [f for r in rl for f in r["failed"] if f["error"]]
    assert row["unparsable"] == len(unparsable) > 0
    assert all(f["code"] is None and f["text"] for f in unparsable)
    for r in rl:  # RL records carry what the rewards need
        assert r["wrong_code"] and r["feedback"] and r["problem"] and r["source"].startswith("demo/")
        for fix in r["refinements"]:
            assert fix["code"] and fix["explanation"]
    for rec in sft:
        if rec.format == "explain_refine":
            assert rec.explanation and rec.wrong_code and rec.feedback


def test_export_audit_passes_then_catches_a_broken_record(uninterrupted, tmp_path):
    import shutil
    proc = run(uninterrupted, "--stage=verify")
    assert "pass" in proc.stdout, proc.stdout
    broken = tmp_path / "broken"
    shutil.copytree(uninterrupted, broken)
    lines = (broken / "sft.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["refined_code"] = "def nothing():\n    return None\n"
    lines[0] = json.dumps(rec)
    (broken / "sft.jsonl").write_text("\n".join(lines) + "\n")
    proc = run(broken, "--stage=verify", check=False)
    assert proc.returncode != 0
    assert "do not pass" in proc.stderr and rec["id"] in proc.stderr


def test_rerun_is_a_no_op_and_a_changed_config_is_refused(uninterrupted):
    before = outputs(uninterrupted)
    run(uninterrupted)
    assert outputs(uninterrupted) == before
    proc = run(uninterrupted, "--config.teacher.temperature=0.5", check=False)
    assert proc.returncode != 0
    assert "teacher.temperature: 0.8 -> 0.5" in proc.stderr and "new --workdir" in proc.stderr
    # execution-only fields may change on resume
    run(uninterrupted, "--config.execute.workers=1")


@pytest.mark.parametrize("stage", ["sample", "teach"])
def test_sigkill_mid_stage_then_resume_gives_the_same_files(uninterrupted, tmp_path, stage):
    workdir = tmp_path / f"killed_in_{stage}"
    proc = subprocess.Popen([*RUN, f"--workdir={workdir}", *OVERRIDES], env=env(SCRIPTED_DELAY="0.4"),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    part = workdir / stage / "part-00000.jsonl"
    kill_once_written(proc, part, 300)
    assert not (workdir / "sft.jsonl").exists()
    with part.open("ab") as f:  # as if the kill had torn a write
        f.write(b'{"key": "p000099/s000", "tex')
    run(workdir)
    assert outputs(workdir) == outputs(uninterrupted)
    # nothing duplicated: every stage record once
    from ledex_jax.collect import store
    for s in ("sample", "execute", "teach", "verify"):
        keys = [json.loads(line)["key"] for line in (workdir / s / "part-00000.jsonl").read_text().splitlines()
                if line.strip()]
        assert len(keys) == len(set(keys)) == len(store.read_stage(uninterrupted, s)), s


def test_two_processes_write_the_same_files_as_one(uninterrupted, tmp_path):
    workdir, port = tmp_path / "two", free_port()
    procs = [subprocess.Popen(
        [*RUN, f"--workdir={workdir}", *OVERRIDES, "--config.distributed.initialize=True",
         f"--config.distributed.coordinator_address=127.0.0.1:{port}", "--config.distributed.num_processes=2",
         f"--config.distributed.process_id={i}", "--config.execute.workers=1"], env=env(), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert outputs(workdir) == outputs(uninterrupted)
    # each process wrote its own share
    for i in range(2):
        assert (workdir / "sample" / f"part-{i:05d}.jsonl").stat().st_size > 0


def test_torn_last_line_is_dropped_and_cut_before_the_next_append(tmp_path):
    from ledex_jax.collect import store
    store.append_records(tmp_path, "s", 0, [{"key": "a", "v": 1}, {"key": "b", "v": 2}])
    with store.part_path(tmp_path, "s", 0).open("ab") as f:
        f.write(b'{"key": "c", "v"')
    assert sorted(store.read_stage(tmp_path, "s")) == ["a", "b"]
    store.append_records(tmp_path, "s", 0, [{"key": "c", "v": 3}])
    assert store.read_stage(tmp_path, "s")["c"]["v"] == 3
    path = store.part_path(tmp_path, "s", 0)
    path.write_bytes(path.read_bytes().replace(b'{"key": "a"', b'{"key" "a"'))  # damage inside: an error
    with pytest.raises(ValueError, match="must not be edited"):
        store.read_stage(tmp_path, "s")


def test_sft_trainer_trains_on_the_collected_file(uninterrupted, tmp_path):
    workdir = tmp_path / "sft"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(REPO / "configs" / "sft.py") + ":tiny",
         f"--workdir={workdir}", f"--config.data.train_path={uninterrupted / 'sft.jsonl'}",
         "--config.train.num_steps=2", "--config.checkpoint.every_steps=2", "--config.log.eval_every_steps=2",
         "--config.train.batch_size=2"],
        env=dict(env(), TF_CPP_MIN_LOG_LEVEL="3"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    held_out = (workdir / "heldout").rglob("*.jsonl")
    sources = {json.loads(line)["source"] for f in held_out for line in f.read_text().splitlines()}
    assert sources and all(s.startswith("demo/") for s in sources)  # the collected records were read


def test_export_refuses_an_unfinished_collection(uninterrupted, tmp_path):
    import shutil
    partial = tmp_path / "partial"
    shutil.copytree(uninterrupted, partial)
    for name in OUTPUTS:
        (partial / name).unlink()
    lines = (partial / "execute" / "part-00000.jsonl").read_text().splitlines()
    (partial / "execute" / "part-00000.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    proc = run(partial, "--stage=export", check=False)
    assert proc.returncode != 0 and "stage execute lacks 1 records" in proc.stderr
    assert not (partial / "sft.jsonl").exists()


def test_hf_teacher_answers_without_code_are_counted_failures(tiny_model_dir, tmp_path):
    """`hf:PATH` loads a local checkpoint as the teacher; a random tiny model writes no code block,
    so every answer is a failed refinement, counted and kept, and the run still finishes."""
    workdir = tmp_path / "hf_teacher"
    run(workdir, f"--config.teacher.kind=hf:{tiny_model_dir}", "--config.teacher.max_new_tokens=24",
        "--config.teacher.max_prompt_len=448", "--config.data.max_problems=4")
    stats = json.loads((workdir / "stats.json").read_text())
    total = stats["total"]
    assert total["wrong"] > 0 and total["answers"] == 2 * total["wrong"] == total["unparsable"]
    assert total["wrong_refined"] == 0 and stats["sft_by_format"]["refine"] == 0
    assert stats["tokens"]["teacher"]["completion"] > 0
    rl = [json.loads(line) for line in (workdir / "rl.jsonl").read_text().splitlines()]
    assert sum(len(r["failed"]) for r in rl) == total["answers"]
