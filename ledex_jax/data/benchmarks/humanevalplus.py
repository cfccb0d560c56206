"""HumanEval+ (EvalPlus): the 164 HumanEval problems with many more inputs; a task passes only
if its base and plus suites both pass.

Read from EvalPlus's release file (``HumanEvalPlus.jsonl.gz`` from the humanevalplus_release
page, or the ``HumanEvalPlus-v0.1.10.jsonl`` evalplus caches in ``~/.cache/evalplus``): one JSON
object per line with task_id "HumanEval/N", prompt, entry_point, canonical_solution (continuing
the prompt), test (HumanEval's own check), contract, base_input and plus_input (lists of argument
lists) and atol. It is not in the offline data: the loader needs its path.

Expected outputs are what ``prompt + canonical_solution`` returns, computed once in the sandbox
and cached (``reference_outputs``). Judging follows EvalPlus: inputs are used as JSON gives them
(EvalPlus rebuilds no types for HumanEval+), exact equality with floats within ``atol``
(``TestCase.call`` applies EvalPlus's 1e-6 for float outputs when atol is 0), and for
``find_zero`` (HumanEval/32), whose answer is any root, EvalPlus's oracle: the output x passes
when ``|poly(xs, x)| <= atol``, checked in the judge by a trusted polynomial (as EvalPlus after
0.3.1 does; 0.3.1 itself fails every answer there, its oracle skipping the per-input
bookkeeping). Time limits and inputs on which the reference fails are handled as for MBPP+
(``mbppplus``): per input max(1 s, 4 x the reference's time), their sum + 1 s per suite for the
program; failing inputs are dropped with a warning.
"""
from __future__ import annotations

import math
from pathlib import Path

from executors import TestCase
from ledex_jax.data.benchmarks.humaneval import humaneval_task_id
from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem
from ledex_jax.data.benchmarks.records import read_records, require
from ledex_jax.data.benchmarks.reference_outputs import (ReferenceOutputs, ReferenceTask,
                                                          file_sha256, judged_suites, reference_outputs)

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input",
          "atol")
SUITES = ("base", "plus")
RECIPE = "humanevalplus/json-inputs+find-zero-oracle/1"  # bump when inputs or oracles change
ROOT_ORACLE_TASKS = ("find_zero",)  # answers are judged as roots of the input polynomial
RELEASES = "https://github.com/evalplus/humanevalplus_release/releases"
SOURCE = (f"HumanEvalPlus.jsonl.gz of EvalPlus v0.1.10 from {RELEASES}, or the "
          "HumanEvalPlus-v0.1.10.jsonl that evalplus caches in ~/.cache/evalplus")
WHAT = "HumanEval+"


def load_humanevalplus(path: str | Path, split: str | None = None, *,
                       cache_dir: str | Path | None = None,
                       workers: int | None = None) -> list[Problem]:
    """HumanEval+ problems in file order, with expected outputs from the cache in ``cache_dir``
    (default ``~/.cache/ledex_jax``), computed the first time by a pool of ``workers``.
    HumanEval+ has one split: ``split`` must be None."""
    if split is not None:
        raise BenchmarkDataError(f"{WHAT} has a single split; got split={split!r}, pass None")
    file = Path(path).expanduser()
    if not file.is_file():
        raise BenchmarkDataError(f"{WHAT}: data file {file} not found; it is not in the offline "
                                 f"data. Download {SOURCE}, and pass its path (.jsonl or "
                                 ".jsonl.gz)")
    records = read_records(file, WHAT)
    tasks = [_reference_task(record, f"{file} record {i + 1}") for i, record in enumerate(records)]
    seen = set()
    for i, task in enumerate(tasks):
        if task.task_id in seen:
            raise BenchmarkDataError(f"{WHAT}: {file} record {i + 1}: task {task.task_id} appears "
                                     "twice; pass the release file as published")
        seen.add(task.task_id)
    refs = reference_outputs(tasks, name="humanevalplus", source_sha256=file_sha256(file),
                             recipe=RECIPE, cache_dir=cache_dir, workers=workers)
    return [_problem(record, task, refs[task.task_id]) for record, task in zip(records, tasks)]


def root_test(xs: list, atol: float) -> TestCase:
    """EvalPlus's ``find_zero`` oracle for one input: the answer x must make the polynomial with
    coefficients ``xs`` vanish within ``atol``. ``poly`` here is the judge's own definition (the
    prompt's, so feedback reads in its terms), never the program's; the assert shown in feedback
    names the input and the bound."""
    source = ("import math\n\n\n"
              "def poly(xs, x):  # trusted: defined by the test, not taken from the program\n"
              "    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n\n\n"
              "def check(candidate):\n"
              f"    assert abs(poly({xs!r}, candidate({xs!r}))) <= {atol!r}\n")
    return TestCase.check(source, "find_zero")


def _reference_task(record: dict, where: str) -> ReferenceTask:
    require(record, FIELDS, WHAT, where)
    try:
        task_id = humaneval_task_id(record["task_id"])
    except BenchmarkDataError as err:
        raise BenchmarkDataError(f"{WHAT}: {where}: {err}; is this a HumanEval+ file?") from None
    inputs = {}
    for suite in SUITES:
        value = record[f"{suite}_input"]
        if not isinstance(value, list) or not all(isinstance(args, list) for args in value):
            raise BenchmarkDataError(f"{WHAT}: {where} ({task_id}): {suite}_input must be a list "
                                     f"of argument lists, got {type(value).__name__}")
        if record["entry_point"] in ROOT_ORACLE_TASKS and not all(
                len(args) == 1 and _coefficients(args[0]) for args in value):
            raise BenchmarkDataError(f"{WHAT}: {where} ({task_id}): {suite}_input of "
                                     f"{record['entry_point']} must hold one list of finite "
                                     "numbers (the coefficients) per input")
        inputs[suite] = value
    atol = record["atol"]
    if atol is not None and (isinstance(atol, bool) or not isinstance(atol, (int, float))
                             or not math.isfinite(atol) or atol < 0):
        raise BenchmarkDataError(f"{WHAT}: {where} ({task_id}): atol must be a number >= 0 "
                                 f"(0 = exact), got {atol!r}")
    return ReferenceTask(task_id, record["prompt"] + record["canonical_solution"],
                         record["entry_point"], inputs)


def _coefficients(value) -> bool:
    return isinstance(value, list) and all(
        type(c) in (int, float) and math.isfinite(c) for c in value)


def _problem(record: dict, task: ReferenceTask, refs: ReferenceOutputs) -> Problem:
    atol = float(record["atol"] or 0)
    root_oracle = task.entry_point in ROOT_ORACLE_TASKS
    judged = judged_suites(task, refs, SUITES, lambda args, expected: root_test(args[0], atol) if root_oracle
                           else TestCase.call(task.entry_point, args, expected=expected, atol=atol), WHAT)
    return Problem(
        task_id=task.task_id,
        benchmark="humanevalplus",
        prompt=record["prompt"],
        tests=judged.tests,
        reference=task.code,
        entry_point=task.entry_point,
        completion_prefix=record["prompt"],
        suites=judged.suites,
        timeout=judged.timeout,
        metadata=judged.metadata,
    )
