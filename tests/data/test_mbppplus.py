"""MBPP+: expected outputs computed once by the references and cached; references pass both
suites; broken solutions fail; EvalPlus's typed inputs and special oracles; cache safety."""
import json

import pytest

from executors import ExecutionPool
from ledex_jax.data.benchmarks import BenchmarkDataError, load_mbppplus
from ledex_jax.data.benchmarks import reference_outputs as reference_outputs_mod
from ledex_jax.evaluate.functional import program_for, suite_verdicts

# Plain tasks plus one of each special case: typed inputs (106 tuple, 124 complex), the
# are_equivalent (164) and sum_div (295) oracles, a re.Match output (737) and the upstream
# empty plus suite stored as {} (793); the fixture adds the first task with an atol.
SUBSET = {"Mbpp/2", "Mbpp/11", "Mbpp/106", "Mbpp/124", "Mbpp/164", "Mbpp/295", "Mbpp/737",
          "Mbpp/793"}


@pytest.fixture(scope="module")
def subset_file(shared_data, tmp_path_factory):
    lines = (shared_data / "MbppPlus.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    float_task = next(r["task_id"] for r in records if float(r["atol"]) > 0)
    keep = [line for line, r in zip(lines, records) if r["task_id"] in SUBSET | {float_task}]
    path = tmp_path_factory.mktemp("mbppplus") / "MbppPlus-subset.jsonl"
    path.write_text("\n".join(keep) + "\n")
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def problems(subset_file, cache_dir):
    return {p.task_id: p for p in load_mbppplus(subset_file, cache_dir=cache_dir, workers=2)}


def judge(pool, problem, code):
    [result] = pool.run([program_for(problem, code, problem.task_id)])
    return suite_verdicts(problem, result.tests)


def test_subset_loads_with_base_and_plus_suites(problems):
    assert len(problems) == len(SUBSET) + 1
    p = problems["Mbpp/2"]
    assert p.suites["base"] == (0, 3) and p.suites["plus"][1] == len(p.tests) > 100
    assert p.examples == ("assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",)
    assert p.completion_prefix.startswith("'''") and p.prompt.startswith("Write a function")
    assert problems["Mbpp/793"].suites["plus"][0] == problems["Mbpp/793"].suites["plus"][1]


def test_inputs_get_their_tuple_and_complex_types_back(problems):
    assert type(problems["Mbpp/106"].tests[0].args[1]) is tuple
    assert type(problems["Mbpp/124"].tests[0].args[1]) is complex


def test_every_reference_passes_base_and_plus(problems, pool):
    for p in problems.values():
        assert judge(pool, p, p.reference) == {"base": True, "plus": True}, p.task_id
        assert not p.metadata["dropped_inputs"], p.task_id


def test_broken_solutions_fail(problems, pool):
    for task_id in ("Mbpp/2", "Mbpp/11", "Mbpp/106", "Mbpp/737"):
        p = problems[task_id]
        verdicts = judge(pool, p, f"def {p.entry_point}(*args):\n    return None\n")
        assert not all(verdicts.values()), task_id


def test_a_solution_passing_only_base_fails_plus(problems, pool):
    p = problems["Mbpp/2"]
    base_args = {json.dumps(list(t.args)): t.expected for t in p.tests[:3]}
    lookup = f"import json\nANSWERS = {base_args!r}\n"
    code = lookup + (f"def {p.entry_point}(*args):\n"
                     f"    return ANSWERS.get(json.dumps([list(a) for a in args]))\n")
    assert judge(pool, p, code) == {"base": True, "plus": False}


def test_special_oracles_accept_a_constant_answer(problems, pool):
    assert judge(pool, problems["Mbpp/164"], "def are_equivalent(a, b):\n    return True\n") == \
        {"base": True, "plus": True}
    assert judge(pool, problems["Mbpp/295"], "def sum_div(n):\n    return 0\n") == \
        {"base": True, "plus": True}
    assert not all(judge(pool, problems["Mbpp/295"], "def sum_div(n):\n    return 1\n").values())


def test_match_objects_are_judged_as_not_none(problems, pool):
    p = problems["Mbpp/737"]
    as_bool = "import re\ndef check_str(s):\n    return bool(re.match('[aeiouAEIOU]', s))\n"
    assert judge(pool, p, as_bool) == {"base": True, "plus": True}


def test_float_task_uses_its_tolerance(problems, pool):
    [p] = [p for p in problems.values() if p.task_id not in SUBSET]
    assert all(t.atol > 0 for t in p.tests)
    assert judge(pool, p, p.reference) == {"base": True, "plus": True}


def test_second_load_reads_the_cache_without_running_anything(subset_file, cache_dir, problems,
                                                              monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(reference_outputs_mod, "ExecutionPool", no_pool)
    again = {p.task_id: p for p in load_mbppplus(subset_file, cache_dir=cache_dir)}
    assert again == problems
    [cache_file] = cache_dir.iterdir()
    assert cache_file.name.startswith("mbppplus-") and cache_file.suffix == ".json"


def test_a_cache_that_does_not_match_is_reported_and_left_alone(subset_file, cache_dir, problems,
                                                                tmp_path):
    [cache_file] = cache_dir.iterdir()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / cache_file.name
    bad.write_text('{"format": "something else"}')
    with pytest.raises(BenchmarkDataError, match=f"{bad}.*delete .* to recompute"):
        load_mbppplus(subset_file, cache_dir=bad_dir)
    assert bad.read_text() == '{"format": "something else"}'


def test_inputs_that_are_not_lists_are_rejected(tmp_path, subset_file):
    record = json.loads(subset_file.read_text().splitlines()[0])
    record["base_input"] = "[[1, 2]]"
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(BenchmarkDataError, match="base_input must be a list of argument lists"):
        load_mbppplus(path, cache_dir=tmp_path)


@pytest.mark.slow
def test_all_399_references_pass_base_and_plus(shared_data, tmp_path):
    problems = load_mbppplus(shared_data / "MbppPlus.jsonl", cache_dir=tmp_path, workers=2)
    assert len(problems) == 399
    per_test = max(p.metadata["per_test_time_limit"] for p in problems)  # as scripts/evaluate.py
    with ExecutionPool(workers=2, per_test_timeout=per_test, cache_size=0,
                       allow_unsandboxed=True) as pool:
        results = pool.run([program_for(p, p.reference, p.task_id) for p in problems])
    failing = [p.task_id for p, r in zip(problems, results)
               if not all(suite_verdicts(p, r.tests).values())]
    assert failing == []
    dropped = {p.task_id for p in problems if p.metadata["dropped_inputs"]}
    assert dropped <= {"Mbpp/255"}  # five outputs too large to leave the sandbox


def test_a_reference_failing_every_input_is_an_error(tmp_path, subset_file):
    record = json.loads(subset_file.read_text().splitlines()[0])
    record["canonical_solution"] = f"\ndef {record['entry_point']}(*args):\n    raise ValueError\n"
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(BenchmarkDataError, match="fails on every base input.*ValueError"):
        load_mbppplus(path, cache_dir=tmp_path)


def test_timeouts_are_not_cached(tmp_path, subset_file, monkeypatch):
    record = json.loads(subset_file.read_text().splitlines()[0])
    record["base_input"], record["plus_input"] = record["base_input"][:1], []
    record["canonical_solution"] = (f"\nimport time\ndef {record['entry_point']}(*args):\n"
                                    "    time.sleep(2)\n")  # every call times out
    path = tmp_path / "slow.jsonl"
    path.write_text(json.dumps(record) + "\n")
    monkeypatch.setattr(reference_outputs_mod, "REFERENCE_PER_TEST_TIMEOUT", 0.5)
    with pytest.raises(BenchmarkDataError, match="fails on every base input.*timeout"):
        load_mbppplus(path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
