"""CodeContests (Li et al. 2022, AlphaCode): competitive programming with stdin/stdout tests.

Default source is the hub dataset ``deepmind/code_contests``; a local path (parquet, jsonl, or
a saved dataset) in the same format overrides it. Kept: problems with at least one Python 3
solution (``language`` 3 = PYTHON3; Python 2 code would not run) and at least one test, the
filter LEDEX.md fixes for the paper's unstated one. Tests are the public, private and
generated tests, in that order; the public ones are the examples a prompt shows.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from executors import TestCase
from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem
from ledex_jax.data.benchmarks.records import iter_records, load_hub, require

HUB_NAME = "deepmind/code_contests"
SPLITS = ("train", "valid", "test")
PYTHON3 = 3
TEST_SOURCES = ("public_tests", "private_tests", "generated_tests")
FIELDS = ("name", "description", "solutions") + TEST_SOURCES
WHAT = "CodeContests"


def load_codecontests(path: str | Path | None = None, split: str = "train", *,
                      test_sources: Sequence[str] = TEST_SOURCES,
                      max_tests: int | None = None) -> list[Problem]:
    """Problems of ``split`` with a Python 3 solution and a test, from ``path`` or the hub."""
    if split not in SPLITS:
        raise BenchmarkDataError(f"{WHAT}: unknown split {split!r}; use one of {SPLITS}")
    unknown = set(test_sources) - set(TEST_SOURCES)
    if unknown:
        raise BenchmarkDataError(f"{WHAT}: unknown test_sources {sorted(unknown)}; use {TEST_SOURCES}")
    if path is not None:
        records, source = iter_records(path, WHAT, split), str(path)
    else:
        records, source = load_hub(HUB_NAME, split, WHAT), HUB_NAME
    problems = []
    for i, record in enumerate(records):
        problem = codecontests_problem(record, split, f"{source} record {i}", test_sources, max_tests)
        if problem is not None:
            problems.append(problem)
    return problems


def codecontests_problem(record, split: str, where: str,
                         test_sources: Sequence[str] = TEST_SOURCES,
                         max_tests: int | None = None) -> Problem | None:
    """One upstream record as a Problem, or None when the filter drops it."""
    require(record, FIELDS, WHAT, where)
    python = python3_solutions(record["solutions"], where)
    tests = []
    for name in test_sources:
        inputs, outputs = _test_lists(record[name], name, where)
        tests += [TestCase.stdio(i, o) for i, o in zip(inputs, outputs)]
    tests = tests[:max_tests]
    if not python or not tests:
        return None
    public_inputs, _ = _test_lists(record["public_tests"], "public_tests", where)
    limit = record.get("time_limit") or {}
    seconds = (limit.get("seconds") or 0) + (limit.get("nanos") or 0) / 1e9
    return Problem(
        task_id=f"CodeContests/{record['name']}",
        benchmark="codecontests",
        prompt=record["description"],
        tests=tuple(tests),
        reference=python[0],
        split=split,
        examples=tuple(public_inputs),
        metadata={"solutions": tuple(python), "time_limit_s": seconds or None,
                  "difficulty": record.get("difficulty"), "source": record.get("source")},
    )


def python3_solutions(solutions, where: str) -> list[str]:
    """The PYTHON3 entries of a ``{"language": [...], "solution": [...]}`` column."""
    if not isinstance(solutions, dict) or not {"language", "solution"} <= set(solutions):
        raise BenchmarkDataError(f"{WHAT}: {where}: 'solutions' must be a dict with 'language' "
                                 "and 'solution' lists")
    return [code for lang, code in zip(solutions["language"], solutions["solution"])
            if lang == PYTHON3]


def _test_lists(tests, name: str, where: str) -> tuple[list[str], list[str]]:
    if not isinstance(tests, dict) or not {"input", "output"} <= set(tests):
        raise BenchmarkDataError(f"{WHAT}: {where}: {name!r} must be a dict with 'input' and "
                                 "'output' lists")
    inputs, outputs = list(tests["input"] or []), list(tests["output"] or [])
    if len(inputs) != len(outputs):
        raise BenchmarkDataError(f"{WHAT}: {where}: {name} has {len(inputs)} inputs but "
                                 f"{len(outputs)} outputs")
    return inputs, outputs
