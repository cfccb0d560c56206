"""MBPP, full (974 problems, ``mbpp.jsonl``) and sanitized (427, ``sanitized-mbpp.json``).

Splits are fixed task_id ranges (Austin et al. 2021): prompt 1-10, test 11-510, validation
511-600, train 601-974. Tests are the ``test_list`` assertions; the first one is the example a
prompt shows, as in the paper's prompts.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

from executors import TestCase
from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem
from ledex_jax.data.benchmarks.records import read_records, require

SPLITS = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}
FULL_FIELDS = ("task_id", "text", "code", "test_list", "test_setup_code")
SANITIZED_FIELDS = ("task_id", "prompt", "code", "test_imports", "test_list")


def mbpp_split(task_number: int) -> str:
    """The split a task_id falls in."""
    for name, ids in SPLITS.items():
        if task_number in ids:
            return name
    raise BenchmarkDataError(f"MBPP: task_id {task_number} is outside 1-974, the ids of any split")


def check_split(split: str | None, what: str) -> None:
    if split is not None and split not in SPLITS:
        raise BenchmarkDataError(f"{what}: unknown split {split!r}; use one of "
                                 f"{', '.join(SPLITS)} or None for all")


def load_mbpp(path: str | Path, split: str | None = "test") -> list[Problem]:
    """Full MBPP (``mbpp.jsonl``), the problems of ``split`` (None: all) in file order."""
    what = "MBPP"
    check_split(split, what)
    problems = []
    for i, record in enumerate(read_records(path, what)):
        require(record, FULL_FIELDS, what, f"{path} record {i}")
        problem = _problem(record, "mbpp", record["text"], record["test_setup_code"] or "", what)
        if split is None or problem.split == split:
            problems.append(problem)
    return problems


def load_mbpp_sanitized(path: str | Path, split: str | None = "test") -> list[Problem]:
    """Sanitized MBPP (``sanitized-mbpp.json``); ``test_imports`` become setup code."""
    what = "MBPP sanitized"
    check_split(split, what)
    problems = []
    for i, record in enumerate(read_records(path, what)):
        require(record, SANITIZED_FIELDS, what, f"{path} record {i}")
        setup = "\n".join(record["test_imports"])
        problem = _problem(record, "mbpp_sanitized", record["prompt"], setup, what)
        if split is None or problem.split == split:
            problems.append(problem)
    return problems


def mbpp_task_id(raw: str | int) -> str:
    """``Mbpp/2``, ``mbpp/2``, ``2`` or ``2`` (int) -> ``Mbpp/2``."""
    text = str(raw).strip()
    number = text.split("/", 1)[1] if text.lower().startswith("mbpp/") else text
    if not number.isdigit():
        raise BenchmarkDataError(f"MBPP: task id {raw!r} is not like 'Mbpp/2' or 2")
    return f"Mbpp/{int(number)}"


def entry_point_of(code: str, tests: list[str]) -> str | None:
    """The reference's function that the tests call (None when no defined name is called)."""
    try:
        defined = [node.name for node in ast.parse(code).body
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    except SyntaxError:
        defined = re.findall(r"^def\s+(\w+)", code, flags=re.M)
    for test in tests:
        for name in re.findall(r"\b(\w+)\s*\(", test):
            if name in defined:
                return name
    return None


def _problem(record: dict, benchmark: str, text: str, setup: str, what: str) -> Problem:
    number = int(record["task_id"])
    tests = list(record["test_list"])
    if not tests:
        raise BenchmarkDataError(f"{what}: task {number} has an empty test_list")
    entry_point = entry_point_of(record["code"], tests)
    return Problem(
        task_id=f"Mbpp/{number}",
        benchmark=benchmark,
        prompt=text,
        tests=tuple(TestCase.assertion(t, entry_point or "") for t in tests),
        reference=record["code"],
        entry_point=entry_point,
        setup_code=setup,
        split=mbpp_split(number),
        examples=(tests[0],),
    )
