"""Bounded work on untrusted values: hostile results fail their test quickly and cleanly, an
oversized reply is the program's error (not a worker death, not rerun), and a program's deep
directory tree is cleaned up without crashing the worker."""
import time
import warnings

import pytest

from executor_helpers import POOL_KW, assert_healthy
from executors import ExecutionPool, Program, SandboxUnavailable, TestCase, values

SLACK = 3.0


def run1(pool, code, tests):
    return pool.run([Program("bounded", code, tests)])[0]


def test_power_of_a_huge_int_fails_within_the_test_timeout(any_pool):
    code = "def f(x):\n    return 10 ** (10 ** 6)\n"
    t0 = time.monotonic()
    r = run1(any_pool, code, [TestCase.assertion("assert f(1) ** 2 == 4")])
    assert time.monotonic() - t0 < any_pool.limits.per_test_timeout + SLACK
    assert r.tests[0].status == "failed", r
    assert "value too large: int of 3,321,929 bits (cap 65,536)" in r.tests[0].message


def test_test_code_stuck_on_a_program_value_fails_within_the_test_timeout(any_pool):
    """Test code that works too long on an int under the cap (one C operation the judge cannot
    interrupt, or a Python loop) fails that test, in about the test's time limit; the others
    are judged as usual."""
    code = "def f():\n    return 1 << 60000\n"
    stuck = ["assert f() ** 9999 == 4", "assert pow(f(), 9999) == 4",
             "import math\nassert math.factorial(f() >> 59980) > 0",
             "x = f()\nn = 0\nwhile n < x:\n    n += 1"]
    tests = [TestCase.assertion(s) for s in stuck] + [
        TestCase.assertion("assert len(list(range(f()))) == 4"), TestCase.assertion("assert f() > 0")]
    t0 = time.monotonic()
    r = run1(any_pool, code, tests)
    per_test = any_pool.limits.per_test_timeout + SLACK
    assert time.monotonic() - t0 < len(stuck) * per_test
    statuses = [t.status for t in r.tests]
    assert statuses == ["failed"] * 5 + ["passed"], statuses
    # (pow() may finish in time here and fail as an ordinary wrong answer)
    assert all("too large" in t.message or "Actual output" in t.message for t in r.tests[:5])
    assert sum("took longer than its time limit" in t.message for t in r.tests) >= 2
    assert_healthy(any_pool)


def test_isnan_of_a_huge_int_is_a_failed_test(any_pool):
    code = "def f():\n    return 10 ** 400\n"
    r = run1(any_pool, code, [TestCase.assertion("import math\nassert math.isnan(f())"),
                              TestCase.call("f", [], 1.5)])
    assert not r.error, r
    assert [t.status for t in r.tests] == ["failed", "failed"], r
    assert "value too large" in r.tests[0].message and "OverflowError" in r.tests[0].message


def test_deeply_nested_result_fails_cleanly(any_pool):
    code = "def f():\n    x = []\n    for _ in range(10000):\n        x = [x]\n    return x\n"
    r = run1(any_pool, code, [TestCase.assertion("assert f() == []"), TestCase.call("f", [], [])])
    assert [t.status for t in r.tests] == ["failed", "failed"], r
    assert all(f"nested too deeply (cap {values.MAX_DEPTH} levels)" in t.message for t in r.tests)
    assert_healthy(any_pool)


def test_decode_refuses_values_over_the_caps():
    with pytest.raises(values.TooLarge, match="cap 65,536"):
        values.decode({"i": hex(1 << 70000)})
    with pytest.raises(values.TooLarge, match="cap 65,536"):
        values.decode(1 << 70000)
    with pytest.raises(values.TooLarge, match="nested too deeply"):
        values.decode([[[[1]]]], max_depth=2)
    with pytest.raises(values.TooLarge):
        values.decode(list(range(20)), max_nodes=10)
    assert values.decode({"i": hex(1 << 65000)}) == 1 << 65000


@pytest.fixture(scope="module", params=["bwrap", "none"])
def single_pool(request):
    """One worker, so consecutive programs meet the same worker (and its leftovers)."""
    kw = dict(POOL_KW, workers=1, max_reply_bytes=200_000)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pool = ExecutionPool(sandbox=request.param, allow_unsandboxed=True, **kw)
    except SandboxUnavailable as e:
        pytest.skip(f"bubblewrap cannot create namespaces here: {e}")
    yield pool
    pool.close()


def test_oversized_reply_is_an_error_result_and_runs_once(single_pool):
    code = "def f():\n    return 'x' * 300_000\n"
    before = next(single_pool._ids)
    r = run1(single_pool, code, [TestCase.call("f", [], "x")])
    after = next(single_pool._ids)
    assert after - before == 2, "the job was sent to a worker more than once"
    assert not r.passed and r.error, r
    assert "too large to report" in r.error and "200,000" in r.error, r.error
    assert_healthy(single_pool)


DEEP_TREE = """
import os

def make(depth):
    top = os.getcwd()
    for i in range(depth):
        os.mkdir("d")
        with open("f", "w") as fh:
            fh.write("x")
        os.chdir("d")
    for i in range(depth):
        os.chdir("..")
        if i % 100 == 50:
            os.chmod("d", 0)
    os.chdir(top)
    return len(os.listdir("."))
"""


def test_deep_directory_tree_is_cleaned_up(single_pool):
    for depth in (1500, 10_000):
        r = run1(single_pool, DEEP_TREE, [TestCase.call("make", [depth], 2)])
        # (10,000 levels may take the program past the test timeout: what it made stays)
        assert r.passed or depth > 1500 and r.tests[0].status == "timeout", r
        probe = "import os\n\ndef ls():\n    return sorted(os.listdir('.'))\n"
        r = run1(single_pool, probe, [TestCase.call("ls", [], [])])
        assert r.passed, r  # the next program starts in an empty directory
    assert_healthy(single_pool)
