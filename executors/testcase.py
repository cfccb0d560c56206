"""The public data model: programs, their tests, and what running them produced."""
import dataclasses
import math
from typing import Any, ClassVar, List, Optional


class _NoExpected:
    """Sentinel: a call test that only computes the value (e.g. reference outputs)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "TestCase.NO_EXPECTED"

    def __reduce__(self):
        return (_NoExpected, ())


NO_EXPECTED = _NoExpected()
KINDS = ("assertion", "check", "call", "stdio")


@dataclasses.dataclass
class TestCase:
    """One test. Build with the constructors below rather than directly; once submitted to a
    pool, a TestCase is taken as fixed (the pool keeps its encoded form on it).
    `cost`: expected seconds of compute, a hint for ExecutionPool's `split_cost` only (not judged).
    """

    __test__ = False  # not a pytest test class

    kind: str
    source: str = ""          # assertion text, or the test code defining check(candidate)
    entry_point: str = ""     # function under test (check and call)
    args: List[Any] = dataclasses.field(default_factory=list)
    expected: Any = NO_EXPECTED
    atol: float = 0.0
    stdin: str = ""
    expected_stdout: str = ""
    float_tol: float = 1e-6   # stdio: tolerance for tokens that are floats in the expected output
    cost: float = dataclasses.field(default=0.0, compare=False)

    NO_EXPECTED: ClassVar[_NoExpected] = NO_EXPECTED

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"TestCase.kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.cost, bool) or not isinstance(self.cost, (int, float)) or not (
                math.isfinite(self.cost) and self.cost >= 0):
            raise ValueError(f"TestCase.cost must be a number of seconds >= 0, got {self.cost!r}")

    @classmethod
    def assertion(cls, source: str, entry_point: str = "") -> "TestCase":
        """An MBPP-style test: `assert f(1) == 2` (any assert statement(s)). `entry_point`, the
        function under test, may shadow a builtin (MBPP/126 tests its own `sum`); no other name
        of the program can change what a builtin means to the test."""
        return cls("assertion", source=_text(source, "source"),
                   entry_point=_text(entry_point, "entry_point"))

    @classmethod
    def check(cls, test_code: str, entry_point: str) -> "TestCase":
        """A HumanEval-style test: `test_code` defines check(candidate); runs check(entry_point)."""
        return cls("check", source=_text(test_code, "test_code"),
                   entry_point=_text(entry_point, "entry_point"))

    @classmethod
    def call(cls, entry_point: str, args: list, expected: Any = NO_EXPECTED,
             atol: float = 0.0, cost: float = 0.0) -> "TestCase":
        """An EvalPlus-style test: entry_point(*args) compared to `expected` in the parent."""
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list, got {type(args).__name__}")
        return cls("call", entry_point=_text(entry_point, "entry_point"), args=list(args),
                   expected=expected, atol=float(atol), cost=cost)

    @classmethod
    def stdio(cls, stdin: str, expected_stdout: str, float_tol: float = 1e-6) -> "TestCase":
        """An APPS/CodeContests test: run the program on `stdin`, compare its stdout line-wise."""
        return cls("stdio", stdin=_text(stdin, "stdin"),
                   expected_stdout=_text(expected_stdout, "expected_stdout"),
                   float_tol=float(float_tol))


def _text(value, name):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


@dataclasses.dataclass
class Program:
    """A program and its tests. `setup_code` runs first (e.g. MBPP test_setup_code, imports)."""

    id: str
    code: str
    tests: List[TestCase]
    setup_code: str = ""
    timeout: Optional[float] = None  # whole-program wall time; default from the pool's limits
    # stop at the first test that does not pass (the rest: "skipped"), as EvalPlus's fast check
    # does: enough for pass/fail (pass@k), not for the fraction of tests passed (RL rewards)
    fail_fast: bool = False


@dataclasses.dataclass
class TestResult:
    """Verdict of one test (always decided by the judge process). `actual` is a plain value
    (or None)."""

    __test__ = False

    status: str               # passed | failed | error | timeout | skipped (after fail_fast)
    message: str = ""
    actual: Any = None
    traceback: str = ""
    duration: float = 0.0
    test: str = ""             # the test as shown in feedback (for check(): the failing assert)

    def to_dict(self):
        from executors import values

        try:
            actual = values.encode(self.actual)
        except (values.UnsupportedValue, RecursionError):
            actual = None
        return {"status": self.status, "message": self.message, "actual": actual,
                "traceback": self.traceback, "duration": self.duration, "test": self.test}

    @classmethod
    def from_dict(cls, d):
        from executors import values

        return cls(status=d["status"], message=d["message"], actual=values.decode(d["actual"]),
                   traceback=d["traceback"], duration=d["duration"], test=d.get("test", ""))


@dataclasses.dataclass
class ExecutionResult:
    """Everything the pool learned about one program."""

    id: str
    passed: bool
    tests: List[TestResult]
    feedback: str
    fraction_passed: float
    wall_time: float
    cached: bool = False
    error: str = ""           # a problem with the program as a whole (no tests, worker failure)
    sandbox: str = ""         # bwrap | none

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["tests"] = [t.to_dict() for t in self.tests]
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["tests"] = [TestResult.from_dict(t) for t in d["tests"]]
        return cls(**d)
