"""The shipped demo SFT data is real: every wrong solution fails with exactly the feedback its
records quote, every fix passes all of its problem's tests (each program runs in a subprocess)."""
import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ledex_jax.data import records as R

DEMO = Path(R.__file__).parent / "demo"

# Runs in a fresh interpreter: exec the program, then each `assert CALL == EXPECTED`, reporting the
# first failure as the demo's feedback does ("# Actual output: repr" or "# Error: Type: message").
HARNESS = r"""
import ast, json, sys
job = json.loads(sys.stdin.read())
ns = {}
exec(job["code"], ns)
for test in job["tests"]:
    cmp = ast.parse(test).body[0].test
    call, expected = ast.unparse(cmp.left), ast.unparse(cmp.comparators[0])
    try:
        actual = eval(call, ns)
    except Exception as e:
        print(json.dumps({"test": test, "line": f"# Error: {type(e).__name__}: {e}"}))
        break
    if actual != eval(expected, ns):
        print(json.dumps({"test": test, "line": f"# Actual output: {actual!r}"}))
        break
else:
    print(json.dumps({"passed": True}))
"""


def run(code: str, tests: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-I", "-c", HARNESS], input=json.dumps({"code": code, "tests": tests}),
                         capture_output=True, text=True, timeout=20, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def demo():
    records = R.read_sft_jsonl(DEMO / "sft_demo.jsonl")
    problems = {}
    for line in (DEMO / "sft_demo_problems.jsonl").read_text().splitlines():
        row = json.loads(line)
        problems[row["source"]] = row
    return records, problems


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
    refine = [r for r in records if r.format != "codegen"]
    for r in refine:
        tests = problems[r.source]["tests"]
        header, test, line = r.feedback.split("\n")
        assert header == "The code above fails the given unit test:"
        assert run(r.wrong_code, tests) == {"test": test, "line": line}, r.id
    for source in problems:
        fixes = {r.refined_code for r in records if r.source == source}
        assert len(fixes) == 1
        assert run(fixes.pop(), problems[source]["tests"]) == {"passed": True}, source


def test_demo_file_is_what_the_generator_writes(demo, tmp_path):
    spec = importlib.util.spec_from_file_location("make_sft_demo", DEMO / "make_sft_demo.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = [R.validate_record(r) for i, p in enumerate(gen.PROBLEMS) for r in gen.records(p, i)]
    assert R.read_sft_jsonl(DEMO / "sft_demo.jsonl") == expected
    rows = [json.loads(x) for x in (DEMO / "sft_demo_problems.jsonl").read_text().splitlines()]
    assert rows == [gen.problem_row(p, i) for i, p in enumerate(gen.PROBLEMS)]
