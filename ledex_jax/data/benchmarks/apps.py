"""APPS (Hendrycks et al. 2021): 5,000 train and 5,000 test problems.

Default source is the hub dataset ``codeparrot/apps``; a local path (jsonl, parquet, or a saved
dataset) in the same format overrides it. Upstream stores ``solutions`` and ``input_output`` as
JSON strings; ``input_output`` holds parallel ``inputs``/``outputs`` lists and, for call-based
(LeetCode-style) problems, ``fn_name``.

Judging follows APPS's own harness where our executor can express it: stdin/stdout tests
(list-valued inputs/outputs are joined by newlines), and call-based tests whose expected value
is the single element of a one-element output list (APPS accepts either that element or the
list itself; we accept the element only). Programs get the stdlib part of the import header
APPS's harness puts before every solution (LeetCode starter code says ``List[int]`` without
importing it), and call-based problems whose starter code is a ``class Solution`` get a
module-level function of the method's name that calls it.
Problems without tests are dropped: nothing could verify a solution to them.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from executors import TestCase
from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem
from ledex_jax.data.benchmarks.records import iter_records, json_field, load_hub, require

HUB_NAME = "codeparrot/apps"
SPLITS = ("train", "test")
DIFFICULTIES = ("introductory", "interview", "competition")
FIELDS = ("problem_id", "question", "solutions", "input_output")
WHAT = "APPS"
# The stdlib part of the header APPS's harness puts before every solution.
PREAMBLE = """import sys, time, itertools, collections, math, fractions, random, heapq
from itertools import accumulate, product, permutations, combinations
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
from typing import List, Tuple
from heapq import *
"""


def load_apps(path: str | Path | None = None, split: str = "train", *,
              difficulties: Iterable[str] | None = None,
              max_tests: int | None = None) -> list[Problem]:
    """APPS problems of ``split`` that have tests, from ``path`` or else the hub."""
    if split not in SPLITS:
        raise BenchmarkDataError(f"{WHAT}: unknown split {split!r}; use one of {SPLITS}")
    wanted = set(difficulties) if difficulties is not None else None
    if wanted is not None and not wanted <= set(DIFFICULTIES):
        raise BenchmarkDataError(f"{WHAT}: unknown difficulties {sorted(wanted - set(DIFFICULTIES))}; "
                                 f"use {DIFFICULTIES}")
    if path is not None:
        records, source = iter_records(path, WHAT, split), str(path)
    else:  # the repo's loading script no longer runs; its jsonl files load as plain json
        records = load_hub(HUB_NAME, split, WHAT, builder="json",
                           data_files={split: f"hf://datasets/{HUB_NAME}/{split}.jsonl"})
        source = HUB_NAME
    problems = []
    for i, record in enumerate(records):
        problem = apps_problem(record, split, f"{source} record {i}", max_tests)
        if problem is not None and (wanted is None or problem.metadata["difficulty"] in wanted):
            problems.append(problem)
    return problems


def apps_problem(record, split: str, where: str, max_tests: int | None = None) -> Problem | None:
    """One upstream record as a Problem, or None when it has no tests."""
    require(record, FIELDS, WHAT, where)
    io = json_field(record, "input_output", WHAT, where)
    if not io:
        return None
    if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
        raise BenchmarkDataError(f"{WHAT}: {where}: input_output must hold 'inputs' and 'outputs'")
    inputs, outputs = io["inputs"], io["outputs"]
    if len(inputs) != len(outputs):
        raise BenchmarkDataError(f"{WHAT}: {where}: {len(inputs)} inputs but {len(outputs)} outputs")
    pairs = list(zip(inputs, outputs))[:max_tests]
    if not pairs:
        return None
    fn_name = io.get("fn_name")
    starter = record.get("starter_code") or ""
    setup = ""
    if fn_name:
        tests = [TestCase.call(fn_name, list(args), expected=_unwrap(out)) for args, out in pairs]
        setup = solution_method_shim(fn_name) if "class Solution" in starter else ""
    else:
        tests = [TestCase.stdio(_text(inp), _text(out)) for inp, out in pairs]
    solutions = json_field(record, "solutions", WHAT, where) or []
    return Problem(
        task_id=f"APPS/{record['problem_id']}",
        benchmark="apps",
        prompt=record["question"],
        tests=tuple(tests),
        reference=solutions[0] if solutions else "",
        entry_point=fn_name or None,
        setup_code=setup,
        preamble=PREAMBLE,
        split=split,
        starter_code=starter,
        metadata={"difficulty": record.get("difficulty"), "url": record.get("url"),
                  "solutions": tuple(solutions)},
    )


def solution_method_shim(fn_name: str) -> str:
    """A function ``fn_name`` calling ``Solution().fn_name``; it looks ``Solution`` up when
    called, so it works whether setup code runs before or after the program."""
    return f"def {fn_name}(*args):\n    return Solution().{fn_name}(*args)\n"


def _text(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _unwrap(output):
    return output[0] if isinstance(output, list) and len(output) == 1 else output
