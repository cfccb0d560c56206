"""Expected outputs of reference solutions, computed once in the sandbox and cached on disk.

EvalPlus ships inputs but not outputs: the outputs are what the canonical solution returns.
They are computed through the execution pool (``TestCase.call(..., expected=NO_EXPECTED)``)
and stored as JSON in the pool's tagged value encoding (so tuples, sets and big ints survive),
with each call's duration (time limits derive from it), in a file named by a hash of the data
file's sha256, the loader's recipe and the Python version (outputs can differ between
versions). Writes are atomic and never replace an existing file: a cache file that does not
match is reported, not overwritten.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from executors import ExecutionPool, Program, TestCase, values
from ledex_jax.data.benchmarks.problem import BenchmarkDataError

FORMAT = "ledex_jax.reference_outputs/1"
log = logging.getLogger(__name__)


# Generous limits: a slow reference must finish here, since its time sets the candidates' limits.
REFERENCE_PER_TEST_TIMEOUT = 60.0
REFERENCE_PROGRAM_TIMEOUT = 1800.0
TRANSIENT = ("timeout", "not run")  # failure messages that say nothing about the reference


@dataclasses.dataclass(frozen=True)
class ReferenceTask:
    """A reference program and the argument lists to call ``entry_point`` with, per suite."""

    task_id: str
    code: str
    entry_point: str
    inputs: Mapping[str, Sequence[list]]
    setup_code: str = ""


@dataclasses.dataclass(frozen=True)
class ReferenceOutputs:
    """Per suite: the output and seconds taken for each input; the output is None where the
    reference itself failed (``failures`` maps suite -> {input index: message})."""

    outputs: Mapping[str, list[Any]]
    failures: Mapping[str, Mapping[int, str]]
    durations: Mapping[str, list[float]]


def default_cache_dir() -> Path:
    """``$LEDEX_JAX_CACHE`` or ``~/.cache/ledex_jax``."""
    return Path(os.environ.get("LEDEX_JAX_CACHE", "~/.cache/ledex_jax")).expanduser()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(source_sha256: str, recipe: str) -> str:
    """What the outputs depend on: the data file, how inputs are built, the Python version."""
    python = ".".join(platform.python_version_tuple()[:2])
    return hashlib.sha256(f"{FORMAT}\n{source_sha256}\n{recipe}\n{python}".encode()).hexdigest()


def reference_outputs(tasks: Sequence[ReferenceTask], *, name: str, source_sha256: str,
                      recipe: str, cache_dir: str | Path | None = None,
                      workers: int | None = None) -> dict[str, ReferenceOutputs]:
    """Outputs of every task's reference, from the cache or else computed and cached.

    ``recipe`` names how the loader turns the file into calls (bump it when that changes, so
    a new cache file is made rather than a stale one read). The computation gets its own pool
    of ``workers`` with generous time limits.
    """
    key = cache_key(source_sha256, recipe)
    path = Path(cache_dir or default_cache_dir()).expanduser() / f"{name}-{key[:16]}.json"
    if path.exists():
        return _read(path, key, tasks)
    log.info("computing reference outputs of %d %s tasks (cached in %s)", len(tasks), name, path)
    # (the benchmark's own reference solutions, not model output: they may run without
    # namespaces where bubblewrap cannot, with the pool's loud warning)
    with ExecutionPool(workers=workers, per_test_timeout=REFERENCE_PER_TEST_TIMEOUT,
                       program_timeout=REFERENCE_PROGRAM_TIMEOUT, cache_size=0,
                       allow_unsandboxed=True) as pool:
        computed = _compute(tasks, pool)
    transient = sorted(t for t, r in computed.items()
                       if any(m.startswith(TRANSIENT) for f in r.failures.values() for m in f.values()))
    if transient:  # a loaded machine or a dying worker must not be remembered as the data's fault
        log.warning("not caching reference outputs: references of %s timed out or did not run",
                    ", ".join(transient))
        return computed
    _write_new(path, {"format": FORMAT, "key": key, "source_sha256": source_sha256,
                      "recipe": recipe, "python": platform.python_version(),
                      "tasks": {t: _to_json(r) for t, r in computed.items()}})
    return computed


def _compute(tasks: Sequence[ReferenceTask], pool: ExecutionPool) -> dict[str, ReferenceOutputs]:
    programs = []
    for task in tasks:
        tests = [TestCase.call(task.entry_point, list(args), expected=TestCase.NO_EXPECTED)
                 for suite in task.inputs.values() for args in suite]
        programs.append(Program(id=task.task_id, code=task.code, tests=tests,
                                setup_code=task.setup_code))
    computed = {}
    for task, result in zip(tasks, pool.run(programs)):
        outputs, failures, durations, start = {}, {}, {}, 0
        for suite, inputs in task.inputs.items():
            tests = list(result.tests[start:start + len(inputs)])
            start += len(inputs)
            outputs[suite] = [t.actual if t.status == "passed" else None for t in tests]
            durations[suite] = [t.duration for t in tests]
            failures[suite] = {i: f"{t.status}: {t.message or result.error}"
                               for i, t in enumerate(tests) if t.status != "passed"}
            missing = len(inputs) - len(tests)  # no per-test results (e.g. the worker failed)
            outputs[suite] += [None] * missing
            durations[suite] += [0.0] * missing
            failures[suite].update({len(tests) + i: f"not run: {result.error}"
                                    for i in range(missing)})
        computed[task.task_id] = ReferenceOutputs(outputs, failures, durations)
    return computed


def _to_json(r: ReferenceOutputs) -> dict:
    return {"outputs": {s: [values.encode(v) for v in outs] for s, outs in r.outputs.items()},
            "failures": {s: {str(i): m for i, m in f.items()} for s, f in r.failures.items()},
            "durations": dict(r.durations)}


def _read(path: Path, key: str, tasks: Sequence[ReferenceTask]) -> dict[str, ReferenceOutputs]:
    fix = f"delete {path} to recompute it"
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or data.get("key") != key:
            raise ValueError(f"it is not the {FORMAT} cache with key {key}")
        out = {}
        for task in tasks:
            entry = data["tasks"][task.task_id]
            outputs = {s: [values.decode(v) for v in entry["outputs"][s]] for s in task.inputs}
            durations = {s: [float(d) for d in entry["durations"][s]] for s in task.inputs}
            for suite, inputs in task.inputs.items():
                if not len(outputs[suite]) == len(durations[suite]) == len(inputs):
                    raise ValueError(f"{task.task_id} {suite}: {len(outputs[suite])} outputs for "
                                     f"{len(inputs)} inputs")
            failures = {s: {int(i): m for i, m in entry["failures"][s].items()} for s in task.inputs}
            out[task.task_id] = ReferenceOutputs(outputs, failures, durations)
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BenchmarkDataError(f"reference-output cache {path} does not match: {err}; {fix}") from err


def _write_new(path: Path, data: dict) -> None:
    """Write ``path`` atomically unless it exists; a concurrent writer's file wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if path exists: never clobbers
        except FileExistsError:
            log.info("%s appeared while computing; keeping the existing file", path)
    finally:
        os.unlink(tmp)


MIN_TIME_LIMIT, TIME_LIMIT_FACTOR = 1.0, 4.0  # EvalPlus's per-input limit: max(1 s, 4x the reference's time)


@dataclasses.dataclass(frozen=True)
class JudgedSuites:
    """An EvalPlus task's tests, suite by suite, with the inputs its reference fails on dropped."""
    tests: tuple
    suites: dict            # suite -> (start, stop) over `tests`
    timeout: float          # the program's budget: every kept input's limit + 1 s per suite
    metadata: dict          # dropped_inputs, time_limits, per_test_time_limit


def judged_suites(task: "ReferenceTask", refs: "ReferenceOutputs", suites: Sequence[str], make_test,
                  what: str) -> JudgedSuites:
    """``make_test(args, expected)`` -> the TestCase of one input whose reference output is
    ``expected``; inputs the reference fails on are dropped (with a warning), a suite where it
    fails on every input is an error. Each test's ``cost`` is the reference's time on its input,
    so the pool can spread a long-computing task over several workers."""
    tests, spans, limits, timeout = [], {}, [], 0.0
    for suite in suites:
        start = len(tests)
        failed = refs.failures[suite]
        for i, (args, expected) in enumerate(zip(task.inputs[suite], refs.outputs[suite])):
            if i not in failed:
                tests.append(dataclasses.replace(make_test(args, expected),
                                                 cost=max(0.0, refs.durations[suite][i])))
                limits.append(max(MIN_TIME_LIMIT, TIME_LIMIT_FACTOR * refs.durations[suite][i]))
        spans[suite] = (start, len(tests))
        timeout += sum(limits[start:]) + 1.0
        if task.inputs[suite] and start == len(tests):
            raise BenchmarkDataError(
                f"{what}: {task.task_id}: the reference fails on every {suite} input (first: "
                f"{next(iter(failed.values()))}); nothing could judge a solution to it")
    dropped = {s: sorted(f) for s, f in refs.failures.items() if f}
    if dropped:
        first = next(m for f in refs.failures.values() for m in f.values())
        log.warning("%s %s: the reference fails on inputs %s (first: %s); those inputs are "
                    "dropped", what, task.task_id, dropped, first)
    return JudgedSuites(tuple(tests), spans, timeout, {
        "dropped_inputs": dropped, "time_limits": tuple(limits),
        "per_test_time_limit": max(limits, default=MIN_TIME_LIMIT)})
