"""Scoring samples: samples files, suite verdicts (incl. EvalPlus's constant-answer oracle)."""
import json

import pytest

from executors import TestCase, TestResult
from ledex_jax.data.benchmarks import BenchmarkDataError, Problem, load_humaneval, normalize_task_id
from ledex_jax.evaluate.functional import score_samples, suite_verdicts
from ledex_jax.evaluate.samples import read_samples


def problem(**kwargs):
    tests = [TestCase.call("f", [i], expected=i) for i in range(4)]
    return Problem(task_id="Mbpp/1", benchmark="mbppplus", prompt="", tests=tests,
                   suites={"base": (0, 1), "plus": (1, 4)}, **kwargs)


def results(*statuses, actual=None):
    return [TestResult(s, actual=actual) for s in statuses]


def test_each_suite_passes_only_if_all_its_tests_pass():
    p = problem()
    assert suite_verdicts(p, results("passed", "passed", "passed", "passed")) == {"base": True, "plus": True}
    assert suite_verdicts(p, results("passed", "passed", "timeout", "passed")) == {"base": True, "plus": False}
    assert suite_verdicts(p, results("error")) == {"base": False, "plus": False}  # tests missing


def test_constant_answer_oracle():
    p = problem(metadata={"accept_constant": 0})
    assert suite_verdicts(p, results("failed", "failed", "passed", "failed", actual=0)) == \
        {"base": True, "plus": True}
    assert suite_verdicts(p, results("failed", "failed", "error", "failed", actual=0)) == \
        {"base": True, "plus": False}
    assert suite_verdicts(p, results("failed", "failed", "failed", "failed", actual=1)) == \
        {"base": False, "plus": False}


@pytest.fixture(scope="module")
def humaneval():
    return {p.task_id: p for p in load_humaneval()}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_samples_number_completions_per_task_and_build_programs(tmp_path, humaneval):
    path = write(tmp_path / "s.jsonl", [
        {"task_id": "HumanEval/0", "completion": "    return True\n"},
        {"task_id": "HumanEval/1", "solution": "def separate_paren_groups(s):\n    return []\n"},
        {"task_id": "HumanEval/0", "completion": "    return False\n",
         "solution": "def has_close_elements(a, b):\n    return False\n"}])
    samples = read_samples(path, humaneval, lambda t: normalize_task_id("humaneval", t))
    assert [(s.task_id, s.completion_id) for s in samples] == \
        [("HumanEval/0", 0), ("HumanEval/1", 0), ("HumanEval/0", 1)]
    assert samples[0].code == humaneval["HumanEval/0"].prompt + "    return True\n"
    assert samples[2].code.startswith("def has_close_elements(a, b)")  # solution wins


@pytest.mark.parametrize("row,message", [
    ({"completion": "x"}, "no 'task_id'"),
    ({"task_id": "HumanEval/999", "completion": "x"}, "not in the benchmark"),
    ({"task_id": "HumanEval/0"}, "neither 'solution'"),
    ({"task_id": "HumanEval/0", "completion": 3}, "must be a string")])
def test_bad_samples_name_the_line(tmp_path, humaneval, row, message):
    path = write(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "x"}, row])
    with pytest.raises(BenchmarkDataError, match=f"sample 2.*{message}|{message}"):
        read_samples(path, humaneval, lambda t: normalize_task_id("humaneval", t))


def test_score_samples_in_order(tmp_path, humaneval, pool):
    p = humaneval["HumanEval/0"]
    path = write(tmp_path / "s.jsonl", [
        {"task_id": "HumanEval/0", "completion": p.reference[len(p.prompt):]},
        {"task_id": "HumanEval/0", "completion": "    return None\n"}])
    samples = read_samples(path, humaneval, lambda t: normalize_task_id("humaneval", t))
    scored = score_samples(humaneval, samples, pool)
    assert [(r.completion_id, r.passed) for r in scored] == [(0, True), (1, False)]
    assert scored[1].suites == {"base": False} and "has_close_elements" in scored[1].feedback
    assert json.loads(json.dumps(scored[0].to_json()))["statuses"] == {"passed": 1}
