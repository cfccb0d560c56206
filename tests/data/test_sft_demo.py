"""The shipped demo SFT data is real: run in the sandboxed execution pool (a subprocess per program,
with time limits), every wrong solution fails with exactly the feedback its records quote and every
fix passes all of its problem's tests; the file is what the generator writes."""
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from executors import ExecutionPool, Program, TestCase
from ledex_jax.data import records as R

DEMO = Path(R.__file__).parent / "demo"


@pytest.fixture(scope="module")
def demo():
    records = R.read_sft_jsonl(DEMO / "sft_demo.jsonl")
    problems = {}
    for line in (DEMO / "sft_demo_problems.jsonl").read_text().splitlines():
        row = json.loads(line)
        problems[row["source"]] = row
    return records, problems


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_sft_demo", DEMO / "make_sft_demo.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def test_demo_has_three_formats_per_problem(demo):
    records, problems = demo
    assert len(problems) >= 36
    by_source = Counter((r.source, r.format) for r in records)
    assert set(by_source) == {(s, f) for s in problems for f in R.FORMATS}
    assert set(by_source.values()) == {1}
    assert len({problems[s]["entry_point"] for s in problems}) == len(problems)  # genuinely different
    for r in records:
        assert problems[r.source]["tests"][0] in r.problem  # the example test is in the task text


def test_wrong_solutions_fail_with_their_feedback_and_fixes_pass(demo):
    records, problems = demo
    programs, expect = [], {}
    for r in records:
        tests = [TestCase.assertion(t) for t in problems[r.source]["tests"]]
        if r.format != "codegen":
            programs.append(Program(f"{r.id}/wrong", r.wrong_code, tests))
            expect[f"{r.id}/wrong"] = r.feedback
        programs.append(Program(f"{r.id}/fixed", r.refined_code, tests))
    with ExecutionPool(workers=2, per_test_timeout=5.0, allow_unsandboxed=True) as pool:
        results = {res.id: res for res in pool.run(programs)}
    for pid, res in results.items():
        if pid.endswith("/wrong"):
            assert not res.passed and res.feedback == expect[pid], pid
        else:
            assert res.passed, (pid, res.feedback)
    kinds = Counter(fb.split("\n")[2].split(":")[0] for fb in expect.values())
    assert kinds["# Actual output"] > 20 and kinds["# Error"] >= 4  # wrong values and exceptions


def test_demo_files_are_what_the_generator_writes(demo, generator):
    records, problems = demo
    feedback = {r.source: r.feedback for r in records if r.format == "refine"}
    expected = []
    for i, p in enumerate(generator.PROBLEMS):
        source = generator.problem_row(p, i)["source"]
        assert feedback[source].startswith(generator.expected_line(p)), source  # the author's reading
        expected += [R.validate_record(r) for r in generator.records(p, i, feedback[source])]
    assert records == expected
    rows = [json.loads(x) for x in (DEMO / "sft_demo_problems.jsonl").read_text().splitlines()]
    assert rows == [generator.problem_row(p, i) for i, p in enumerate(generator.PROBLEMS)]
