"""Stdlib C-typed results (re.Match) cross the sandbox as opaque truth values: `assert f(x)`
is judged by their truth, and they never compare equal to an expected value."""
import re

import pytest

from executors import values


def test_match_objects_cross_as_opaque_truth():
    enc = values.encode(re.match("a", "abc"))
    assert enc == {"o": ["re.Match", True]}
    dec = values.decode(enc)
    assert bool(dec) is True and dec != "a" and repr(dec) == "<re.Match object>"
    assert bool(values.decode(values.encode(iter([])))) is True


def test_program_defined_classes_stay_unsupported():
    class Truthy:
        def __bool__(self):
            return True

    with pytest.raises(values.UnsupportedValue):
        values.encode(Truthy())
    with pytest.raises(ValueError):
        values.decode({"o": ["x", "yes"]})


def test_truthiness_assert_on_match_passes_and_equality_fails(pool_factory=None):
    from executors import ExecutionPool, Program, TestCase
    code = "import re\ndef text_match(s):\n    return re.search('ab+', s)\n"
    tests = [TestCase.assertion("assert text_match('xabbb')"), TestCase.assertion("assert not text_match('xyz')"),
             TestCase.assertion("assert text_match('xabbb') == 'abbb'")]
    with ExecutionPool(workers=1) as pool:
        result, = pool.run([Program("m", code, tests)])
    assert [t.status for t in result.tests] == ["passed", "passed", "failed"]
