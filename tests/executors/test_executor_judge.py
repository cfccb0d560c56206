"""The judge process: test code runs there on the program's answers; EvalPlus and stdio
comparison semantics; what a program can and cannot decide about its own verdict."""
import textwrap

import pytest

from executors import Program, TestCase, compare

A = TestCase.assertion


def run(pool, code, tests, setup=""):
    [result] = pool.run([Program("judge", textwrap.dedent(code), tests, setup_code=setup)])
    return result


def statuses(result):
    return [t.status for t in result.tests]


# -- test code of any form runs in the judge --------------------------------------------------

def test_check_functions_with_loops_helpers_and_random_inputs(bwrap_pool):
    test = textwrap.dedent("""
        import random

        def reference(x):
            return x * 2

        def check(candidate):
            rng = random.Random(0)
            for _ in range(50):
                x = rng.randint(-100, 100)
                assert candidate(x) == reference(x), x
            assert all(candidate(x) == 2 * x for x in range(5))
            assert [candidate(x) for x in (1, 2)] == [2, 4]
    """)
    good = run(bwrap_pool, "def double(x):\n    return x + x\n", [TestCase.check(test, "double")])
    bad = run(bwrap_pool, "def double(x):\n    return x * 2 if x < 50 else 0\n",
              [TestCase.check(test, "double")])
    assert good.passed, good
    assert statuses(bad) == ["failed"] and bad.tests[0].test == "assert double(x) == reference(x), x"


def test_expected_sides_are_computed_in_the_judge_whatever_the_program_rebinds(any_pool):
    """The program rebinds every name the expected sides use; the test still means Python's."""
    code = """
        from collections import Counter
        from fractions import Fraction
        import collections

        class Forged(dict):
            def __eq__(self, other):
                return True
            __hash__ = None

        collections.Counter = Forged
        Counter = Forged
        Fraction = lambda *a: 1
        def sorted(x, **kw):
            return "anything"
        def reference(x):
            return "anything"

        def f(x):
            return "wrong"
    """
    tests = [A("assert f(2) == Counter('aab')"), A("assert f(2) == Fraction(6, 1)"),
             A("assert sorted(f(2)) == sorted([1, 2])"),
             A("assert f(10) == reference(10)", "f")]
    result = run(any_pool, code, tests, setup="def reference(x):\n    return x + 1\n")
    assert statuses(result) == ["failed"] * 4, result


def test_the_function_under_test_may_shadow_a_builtin(any_pool):
    code = "def sum(a, b):\n    return a + b + 1\n"
    assert run(any_pool, code, [A("assert sum(1, 2) == 4", "sum")]).passed
    # ... but no other name may: `sum` in this test is Python's
    assert not run(any_pool, code, [A("assert sum([1, 2]) == 4", "f")]).passed


def test_correct_programs_returning_their_own_objects_pass(any_pool):
    code = """
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y
            def __eq__(self, other):
                return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)
            def __hash__(self):
                return hash((self.x, self.y))
            def __repr__(self):
                return f"Point({self.x}, {self.y})"
            def norm1(self):
                return abs(self.x) + abs(self.y)
            def __iter__(self):
                return iter((self.x, self.y))

        def f(x):
            return Point(x, -x)

        def g(n):
            return (Point(i, i) for i in range(n))
    """
    tests = [A("assert isinstance(f(1), Point)"), A("assert f(1).x == 1 and f(1).y == -1"),
             A("assert f(2) == Point(2, -2)"), A("assert f(2).norm1() == 4"),
             A("assert repr(f(3)) == 'Point(3, -3)'"), A("assert list(f(4)) == [4, -4]"),
             A("assert -4 in f(4)"), A("assert len({f(1), f(1), f(2)}) == 2"),
             A("assert [p.x for p in g(3)] == [0, 1, 2]"),
             TestCase.check("def check(c):\n    for i in range(3):\n"
                            "        assert c(i) == Point(i, -i)\n", "f")]
    result = run(any_pool, code, tests)
    assert result.passed, result.feedback


def test_a_programs_object_never_equals_a_judge_value(any_pool):
    code = """
        class Yes:
            __eq__ = lambda self, other: True
            __ne__ = lambda self, other: False

        def f(x):
            return Yes()
    """
    tests = [A("assert f(1) == 2"), A("assert not (f(1) != 2)"), A("assert f(1) in [2]"),
             A("assert [f(1)] == [2]"), TestCase.call("f", [1], 2)]
    result = run(any_pool, code, tests)
    assert statuses(result) == ["failed"] * 5, result


def test_program_exceptions_raise_their_builtin_class_in_test_code(any_pool):
    code = """
        class Invalid(ValueError):
            pass
        def f(x):
            if x < 0:
                raise Invalid("negative")
            return x
    """
    test = "try:\n    f(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\nelse:\n    assert False\n"
    result = run(any_pool, code, [A(test), A("assert f(-1) == 1")])
    assert statuses(result) == ["passed", "error"], result
    assert result.tests[1].message == "Invalid: negative"
    assert "raise Invalid" in result.tests[1].traceback


def test_builtin_and_stdlib_callables_can_be_passed_to_the_program(any_pool):
    code = "def apply(f, xs):\n    return [f(x) for x in xs]\n"
    tests = [A("assert apply(str, [1, 2]) == ['1', '2']"),
             A("import math\nassert apply(math.floor, [1.5]) == [1]"),
             A("assert apply(lambda x: x, [1]) == [1]")]
    result = run(any_pool, code, tests)
    assert statuses(result) == ["passed", "passed", "error"], result
    assert "cannot pass this value to the program" in result.tests[2].message


def test_program_values_that_stall_the_judge_fail_in_bounded_time(any_pool):
    code = "def f():\n    return 1 << 60000\n"
    result = run(any_pool, code, [A("assert 3 ** f() > 0"), A("assert f() > 0")])
    assert statuses(result) == ["failed", "passed"], result
    assert "took longer than its time limit" in result.tests[0].message


# -- comparison semantics ---------------------------------------------------------------------

@pytest.mark.parametrize("actual, expected, atol, ok", [
    ([1, 2], (1, 2), 0, True),
    ((1, (2, 3)), [1, [2, 3]], 0, True),
    (0.1 + 0.2, 0.3, 0, True),
    (0.30001, 0.3, 0, False),
    (0.30001, 0.3, 1e-4, True),
    ([1.0, 2.0000001], [1.0, 2.0], 0, True),
    ([1.0], [1.0, 2.0], 0, False),
    ("0.3", 0.3, 0, False),
    (True, 1, 0, True),
    (float("nan"), float("nan"), 0, False),
    (float("inf"), float("inf"), 0, True),
    (3, 3.0000000001, 0, True),
    ({"a": (1, 2)}, {"a": [1, 2]}, 0, True),
    ([1, 2], [2, 1], 0, False),
])
def test_evalplus_comparison(actual, expected, atol, ok):
    assert compare.evalplus_equal(actual, expected, atol) is ok


@pytest.mark.parametrize("actual, expected, ok", [
    ("1 2\n3\n", "1 2\n3", True),
    ("1 2   \n3\n\n\n", "1 2\n3\n", True),
    ("1 2\r\n3\r\n", "1 2\n3\n", True),
    ("1  2\n3\n", "1 2\n3\n", False),       # internal whitespace is exact
    ("3\n1 2\n", "1 2\n3\n", False),        # order matters: no token sets
    ("1 2\n", "1 2\n3\n", False),           # no prefixes
    ("1 2\n3\n4\n", "1 2\n3\n", False),
    ("0.3333333\n", "0.33333333\n", True),  # float tokens get the tolerance
    ("0.334\n", "0.333\n", False),
    ("10.0\n", "10\n", False),              # integers are exact
    ("1e6\n", "1000000.0\n", True),
    ("YES\n", "yes\n", False),
    ("", "", True),
])
def test_stdio_comparison(actual, expected, ok):
    assert compare.stdio_equal(actual, expected) is ok
