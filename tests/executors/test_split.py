"""Splitting a program whose tests compute long into parts on several slots (`split_cost`):
the merged result must read exactly as an unsplit run's."""
import dataclasses
import json
import time
import warnings

import pytest

from executor_helpers import POOL_KW
from executors import ExecutionPool, Program, TestCase, values
from executors import cache as cache_mod
from executors import pool as pool_mod
from executors.limits import Limits
from ledex_jax.data.benchmarks.reference_outputs import (ReferenceOutputs, ReferenceTask,
                                                         judged_suites)

C = TestCase.call
# LOAD is drawn once per load of the program, i.e. once per child: one value per part
CODE = """
import os
LOAD = os.urandom(8).hex()

def load(x):
    return LOAD

def square(x):
    if x == 7:
        raise ValueError("seven")
    return x * x + (1 if x in WRONG else 0)
"""


def code(wrong=()):
    return CODE + f"WRONG = {set(wrong) or 'set()'}\n"


def squares(n=10, cost=0.1):
    """`n` call tests of square(i) (7 raises), `cost` seconds each: 1 s in all by default."""
    return [C("square", [i], i * i, cost=cost) for i in range(n)]


def loads(n=10, cost=0.1):
    return [C("load", [i], cost=cost) for i in range(n)]


def unsplit(tests):
    """The same tests, costing nothing: never split."""
    return [dataclasses.replace(t, cost=0.0) for t in tests]


def run(pool, tests, wrong=(), **kw):
    [result] = pool.run([Program("p", code(wrong), tests, **kw)])
    return result


def view(result):
    """Everything of a result that must not depend on splitting (durations and wall time do)."""
    return (result.passed, result.fraction_passed, result.feedback, result.error, result.cached,
            result.sandbox, [(t.status, t.message, t.actual, t.traceback, t.test)
                             for t in result.tests])


def assert_same_as_unsplit(pool, splits, tests, wrong=(), **kw):
    """Run `tests` split (checked with the `splits` spy) and whole; the same result."""
    before = len(splits)
    split = run(pool, tests, wrong, **kw)
    assert len(splits) == before + 1, "the program was not split"
    whole = run(pool, unsplit(tests), wrong, **kw)
    assert len(splits) == before + 1, "the program with no cost was split"
    assert view(split) == view(whole)
    assert split.wall_time > 0
    return split


@pytest.fixture
def splits(monkeypatch):
    """Every split run the pool starts (a spy on _SplitRun)."""
    started = []

    class Spy(pool_mod._SplitRun):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(pool_mod, "_SplitRun", Spy)
    return started


@pytest.fixture(scope="module")
def unsplit_pool():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with ExecutionPool(sandbox="auto", allow_unsandboxed=True, split_cost=0,
                           **POOL_KW) as pool:
            yield pool


def test_costly_tests_run_as_contiguous_parts_in_separate_children(any_pool):
    r = run(any_pool, loads())
    assert r.passed and len(r.tests) == 10
    tokens = [t.actual for t in r.tests]
    assert len(set(tokens)) == 2, tokens  # two children: two parts
    assert tokens == [tokens[0]] * 5 + [tokens[-1]] * 5  # contiguous, in test order
    assert len({t.actual for t in run(any_pool, unsplit(loads())).tests}) == 1


def test_correct_and_wrong_programs_merge_as_an_unsplit_run(any_pool, splits):
    r = assert_same_as_unsplit(any_pool, splits, squares(7))
    assert r.passed and r.fraction_passed == 1.0 and r.feedback == ""
    wrong = assert_same_as_unsplit(any_pool, splits, squares(), wrong={2, 8})
    assert [t.status for t in wrong.tests] == (["passed"] * 2 + ["failed"] + ["passed"] * 4
                                               + ["error", "failed", "passed"])
    assert wrong.fraction_passed == pytest.approx(0.7)
    assert wrong.feedback.startswith("The code above fails the given unit test:\n"
                                     "assert square(2) == 4\n# Actual output: 5")


def test_fail_fast_skips_every_test_after_the_first_failure(any_pool, splits):
    early = assert_same_as_unsplit(any_pool, splits, squares(), wrong={1}, fail_fast=True)
    assert [t.status for t in early.tests] == ["passed", "failed"] + ["skipped"] * 8
    assert early.tests[9].message == "not run: an earlier test did not pass (fail_fast)"
    assert early.tests[9].actual is None and early.tests[9].test == "assert square(9) == 81"
    late = assert_same_as_unsplit(any_pool, splits, squares(), fail_fast=True)  # 7 raises
    assert [t.status for t in late.tests] == ["passed"] * 7 + ["error"] + ["skipped"] * 2
    assert assert_same_as_unsplit(any_pool, splits, squares(7), fail_fast=True).passed


def test_fail_fast_part_not_started_is_not_run(plain_pool, splits):
    blocker = plain_pool.submit(Program("sleep", "import time\ndef f(x):\n    time.sleep(1)\n"
                                                 "    return x\n",
                                        [C("f", [i], i) for i in range(4)]))
    while not blocker.running():  # one slot busy for 4 s; parts queue for the other
        time.sleep(0.01)
    program = Program("p", code({1}), squares(), fail_fast=True)
    r = plain_pool.submit(program).result(timeout=60)
    assert len(splits) == 1
    # the second part would need the blocker's slot: it was dropped, not waited for
    assert not blocker.done()
    assert [t.status for t in r.tests] == ["passed", "failed"] + ["skipped"] * 8
    assert view(r) == view(run(plain_pool, unsplit(program.tests), {1}, fail_fast=True))
    assert blocker.result(timeout=60).passed


def test_no_cost_or_no_split_cost_runs_whole(plain_pool, unsplit_pool):
    assert len({t.actual for t in run(plain_pool, unsplit(loads())).tests}) == 1
    assert len({t.actual for t in run(unsplit_pool, loads()).tests}) == 1
    assert len({t.actual for t in run(plain_pool, loads(cost=0.02)).tests}) == 1  # 0.2 s < 0.25
    with pytest.raises(ValueError, match="cost"):
        C("load", [1], cost=-1.0)


def test_split_bounds_are_contiguous_and_worth_a_slot(plain_pool):
    def bounds(costs):
        return plain_pool._split_bounds([C("f", [i], cost=c) for i, c in enumerate(costs)])

    assert bounds([0.1] * 10) == [(0, 5), (5, 10)]
    assert bounds([0.0] * 4 + [0.2, 0.3]) == [(0, 5), (5, 6)]
    assert bounds([1.3, 0.01, 0.01]) is None  # the second part would be worth nothing
    assert bounds([0.3]) is None and bounds([0.1, 0.1]) is None


def test_invalid_tests_in_a_part_are_reported_as_unsplit(any_pool, splits):
    bad = C("square", [object()], 1, cost=0.1)
    r = assert_same_as_unsplit(any_pool, splits, squares(5) + [bad] * 5)  # part 2: all invalid
    assert [t.status for t in r.tests] == ["passed"] * 5 + ["error"] * 5
    assert r.tests[5].message.startswith("invalid test: the arguments are not plain values")
    mixed = squares(6)[:2] + [bad] + squares(6)[3:] + [bad, C("square", [1], 1, cost=0.1)]
    assert_same_as_unsplit(any_pool, splits, mixed)
    assert_same_as_unsplit(any_pool, splits, mixed, fail_fast=True)


def test_a_part_that_fails_as_a_whole_fails_the_program(splits):
    kw = dict(POOL_KW, max_reply_bytes=200_000)
    with ExecutionPool(sandbox="auto", allow_unsandboxed=True, **kw) as pool:
        huge = Program("p", "def f(x):\n    return 'x' * x\n",
                       [C("f", [1], "x", cost=0.2), C("f", [10 ** 6], "", cost=0.2)])
        r = pool.run([huge])[0]
        assert len(splits) == 1
        assert r.error.startswith("the program's results are too large to report")
        assert r.tests == [] and not r.passed and r.fraction_passed == 0.0
        assert pool.run([Program("q", code(), squares())])[0].fraction_passed == 0.9


def test_cancelled_split_program_leaves_the_pool_working(plain_pool):
    blockers = [plain_pool.submit(Program(f"sleep{i}", "import time\ndef f():\n    time.sleep(1)\n"
                                                       "    return 1\n", [C("f", [], 1)]))
                for i in range(2)]
    fut = plain_pool.submit(Program("p", code(), loads()))
    assert fut.cancel()
    assert all(b.result(timeout=60).passed for b in blockers)
    assert all(f is not fut for f in plain_pool._inflight.values())
    assert run(plain_pool, loads()).passed


def test_cost_is_a_hint_not_part_of_the_test():
    a, b = C("f", [1], 2), C("f", [1], 2, cost=5.0)
    assert a == b
    assert pool_mod._make_test_spec(a) == pool_mod._make_test_spec(b)
    keys = {cache_mod.cache_key(Program("p", "", [t]), Limits(), 1.0, "none",
                                [pool_mod._make_test_spec(t)[0]]) for t in (a, b)}
    assert len(keys) == 1


def test_a_call_spec_is_canonical_json():
    """The spec text (spliced around the arguments' text) is what sorted-key JSON of the same
    dict gives: one text per test, so one cache key."""
    for test in (C("f", [[1, (2, 3)], "é"], {"k": [1.5]}, atol=0.1), C("g", [], None),
                 C("h", [{1, 2}])):
        text, why = pool_mod._make_test_spec(test)
        assert why is None and text == json.dumps(json.loads(text), sort_keys=True,
                                                  separators=(",", ":"))
        assert json.loads(text)["size"] == len(json.dumps(values.encode(list(test.args)),
                                                          separators=(",", ":")))


def test_judged_suites_cost_is_the_reference_time():
    task = ReferenceTask("T/1", "def f(x):\n    return x\n", "f",
                         {"base": [[1], [2]], "plus": [[3], [4], [5]]})
    refs = ReferenceOutputs(outputs={"base": [1, 2], "plus": [3, None, 5]},
                            failures={"base": {}, "plus": {1: "error: boom"}},
                            durations={"base": [0.5, 0.25], "plus": [0.125, 9.0, 2.0]})
    judged = judged_suites(task, refs, ("base", "plus"),
                           lambda args, expected: TestCase.call("f", args, expected), "test")
    assert [t.cost for t in judged.tests] == [0.5, 0.25, 0.125, 2.0]
    assert [t.args for t in judged.tests] == [[1], [2], [3], [5]]
