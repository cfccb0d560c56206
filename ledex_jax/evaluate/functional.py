"""Judge programs against benchmark problems with the execution pool, suite by suite.

A sample passes when every suite of its problem passes (MBPP+: base and plus). Two MBPP+ tasks
carry EvalPlus's special oracle (``Problem.metadata["accept_constant"]``): a suite also passes
when the program returned that same value on every input, as EvalPlus accepts for
``are_equivalent`` (always True) and ``sum_div`` (always 0).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from executors import ExecutionPool, ExecutionResult, Program, TestResult
from ledex_jax.data.benchmarks.problem import Problem
from ledex_jax.evaluate.samples import Sample


@dataclasses.dataclass(frozen=True)
class SampleResult:
    """The verdict on one sample, as written to the per-sample results file."""

    task_id: str
    completion_id: int
    passed: bool
    suites: dict[str, bool]
    fraction_passed: float
    statuses: dict[str, int]
    feedback: str
    wall_time: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def program_for(problem: Problem, code: str, program_id: str) -> Program:
    """The executor's unit of work for ``code`` judged by ``problem``'s tests."""
    return Program(id=program_id, code=problem.preamble + code, tests=list(problem.tests),
                   setup_code=problem.setup_code, timeout=problem.timeout)


def suite_verdicts(problem: Problem, tests: Sequence[TestResult]) -> dict[str, bool]:
    """Whether each suite of ``problem`` passed, given per-test results in test order."""
    accept = problem.metadata.get("accept_constant", _NOTHING)
    verdicts = {}
    for name, (start, stop) in problem.suites.items():
        suite = tests[start:stop]
        passed = len(suite) == stop - start and all(t.status == "passed" for t in suite)
        if not passed and accept is not _NOTHING and len(suite) == stop - start:
            passed = all(t.status in ("passed", "failed") and _equal(t.actual, accept) for t in suite)
        verdicts[name] = passed
    return verdicts


def status_counts(tests: Sequence[TestResult]) -> dict[str, int]:
    """How many tests ended in each status (passed, failed, error, timeout, skipped), keys sorted
    (the records are compared byte for byte across resumed runs)."""
    statuses: dict[str, int] = {}
    for test in tests:
        statuses[test.status] = statuses.get(test.status, 0) + 1
    return dict(sorted(statuses.items()))


def judge(problem: Problem, sample: Sample, result: ExecutionResult) -> SampleResult:
    suites = suite_verdicts(problem, result.tests)
    statuses = status_counts(result.tests)
    return SampleResult(task_id=sample.task_id, completion_id=sample.completion_id,
                        passed=all(suites.values()), suites=suites,
                        fraction_passed=result.fraction_passed, statuses=statuses,
                        feedback=result.feedback, wall_time=result.wall_time)


def score_samples(problems: Mapping[str, Problem], samples: Iterable[Sample],
                  pool: ExecutionPool, progress: bool = False) -> list[SampleResult]:
    """Run every sample through ``pool``; results in sample order (``progress``: a bar)."""
    samples = list(samples)
    programs = [program_for(problems[s.task_id], s.code, f"{s.task_id}#{s.completion_id}")
                for s in samples]
    results = pool.run(programs, progress=progress)
    return [judge(problems[s.task_id], s, r) for s, r in zip(samples, results)]


class _Nothing:
    def __repr__(self):
        return "<nothing>"


_NOTHING = _Nothing()


def _equal(actual, expected) -> bool:
    try:
        return bool(actual == expected)
    except Exception:  # e.g. numpy arrays compare elementwise
        return False
