"""MBPP+ (EvalPlus): MBPP problems with many more inputs; a task passes only if its base and
plus suites both pass.

Read from ``MbppPlus.jsonl`` (EvalPlus format: task_id "Mbpp/N", prompt, entry_point,
canonical_solution, base_input, plus_input, atol). Expected outputs are what
``prompt + canonical_solution`` returns, computed once in the sandbox and cached
(``reference_outputs``). Judging follows EvalPlus: tuples/sets/complex arguments rebuilt per
task (``mbppplus_inputs``), exact equality with floats within ``atol`` (``TestCase.call``
applies EvalPlus's 1e-6 for float outputs when atol is 0), the ``are_equivalent``/``sum_div``
oracles, and for the three regex tasks whose outputs are match objects, "returned something"
(``MBPP_OUTPUT_NOT_NONE_TASKS``). Time limits are EvalPlus's: per input max(1 s, 4 x the
reference's time), and their sum + 1 s per suite for the whole program (EvalPlus also caps a
suite at 61 s, which its slowest references, e.g. Mbpp/599's, do not meet). Inputs on which the reference itself fails are dropped with a warning: they
cannot tell right from wrong.
"""
from __future__ import annotations

from pathlib import Path

from executors import TestCase
from ledex_jax.data.benchmarks.mbpp import check_split, mbpp_split, mbpp_task_id
from ledex_jax.data.benchmarks.mbppplus_inputs import typed_inputs
from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem
from ledex_jax.data.benchmarks.records import read_records, require
from ledex_jax.data.benchmarks.reference_outputs import (ReferenceTask, file_sha256, judged_suites,
                                                          reference_outputs)

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")
SUITES = ("base", "plus")
RECIPE = "mbppplus/typed-inputs+not-none-adapter/1"  # bump when inputs or adapters change
# EvalPlus special oracles: the suite also passes if every output equals this value.
ACCEPT_CONSTANT = {"are_equivalent": True, "sum_div": 0}
# Outputs are re.Match objects, which cannot leave the sandbox: judge "is not None" instead.
NOT_NONE_TASKS = ("check_str", "text_match_three", "text_starta_endb")
WHAT = "MBPP+"


def load_mbppplus(path: str | Path, split: str | None = None, *,
                  cache_dir: str | Path | None = None, workers: int | None = None) -> list[Problem]:
    """MBPP+ problems (``split`` filters by MBPP's task_id ranges; None: all) with expected
    outputs from the cache in ``cache_dir`` (default ``~/.cache/ledex_jax``), computed the
    first time by a pool of ``workers``."""
    check_split(split, WHAT)
    records = read_records(path, WHAT)
    tasks = [_reference_task(record, f"{path} record {i}") for i, record in enumerate(records)]
    refs = reference_outputs(tasks, name="mbppplus", source_sha256=file_sha256(path),
                             recipe=RECIPE, cache_dir=cache_dir, workers=workers)
    problems = []
    for record, task in zip(records, tasks):
        problem = _problem(record, task, refs[task.task_id])
        if split is None or problem.split == split:
            problems.append(problem)
    return problems


def not_none_adapter(entry_point: str) -> tuple[str, str]:
    """(name, setup code) of a function returning whether ``entry_point`` returned something
    (a bool output is kept as is, as EvalPlus does). It looks the entry point up when called,
    so it works whether setup code runs before or after the program."""
    name = f"{entry_point}_is_not_none"
    code = (f"def {name}(*args):\n"
            f"    out = {entry_point}(*args)\n"
            f"    return out if isinstance(out, bool) else out is not None\n")
    return name, code


def _reference_task(record: dict, where: str) -> ReferenceTask:
    require(record, FIELDS, WHAT, where)
    task_id = mbpp_task_id(record["task_id"])
    inputs = {}
    for suite in SUITES:
        value = record[f"{suite}_input"]
        if value == {}:  # one upstream task stores its empty plus suite as {}
            value = []
        if not isinstance(value, list) or not all(isinstance(args, list) for args in value):
            raise BenchmarkDataError(f"{WHAT}: {where} ({task_id}): {suite}_input must be a list "
                                     "of argument lists")
        inputs[suite] = typed_inputs(int(task_id.split("/")[1]), value)
    entry, setup = record["entry_point"], ""
    if entry in NOT_NONE_TASKS:
        entry, setup = not_none_adapter(entry)
    return ReferenceTask(task_id, record["prompt"] + record["canonical_solution"], entry, inputs,
                         setup)


def _problem(record: dict, task: ReferenceTask, refs) -> Problem:
    atol = float(record["atol"] or 0)
    judged = judged_suites(task, refs, SUITES, lambda args, expected: TestCase.call(
        task.entry_point, args, expected=expected, atol=atol), WHAT)
    assertions = [line for line in record.get("assertion", "").splitlines() if line.strip()]
    metadata = dict(judged.metadata)
    if record["entry_point"] in ACCEPT_CONSTANT:
        metadata["accept_constant"] = ACCEPT_CONSTANT[record["entry_point"]]
    return Problem(
        task_id=task.task_id,
        benchmark="mbppplus",
        prompt=record["prompt"].strip().strip("'\"").strip(),
        tests=judged.tests,
        reference=task.code,
        entry_point=record["entry_point"],
        setup_code=task.setup_code,
        split=mbpp_split(int(task.task_id.split("/")[1])),
        examples=tuple(assertions[:1]),
        completion_prefix=record["prompt"],
        suites=judged.suites,
        timeout=judged.timeout,
        metadata=metadata,
    )
