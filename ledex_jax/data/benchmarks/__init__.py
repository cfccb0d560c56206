"""Benchmark loaders: every benchmark becomes a list of ``Problem``s judged by ``executors``.

``load_benchmark(name, path, split)`` picks the loader; each loader also stands alone
(``load_humaneval``, ``load_mbpp``, ...). Nothing here imports JAX.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ledex_jax.data.benchmarks.apps import load_apps
from ledex_jax.data.benchmarks.codecontests import load_codecontests
from ledex_jax.data.benchmarks.humaneval import humaneval_task_id, load_humaneval
from ledex_jax.data.benchmarks.humanevalplus import SOURCE as HUMANEVALPLUS_SOURCE
from ledex_jax.data.benchmarks.humanevalplus import load_humanevalplus
from ledex_jax.data.benchmarks.mbpp import load_mbpp, load_mbpp_sanitized, mbpp_task_id
from ledex_jax.data.benchmarks.mbppplus import load_mbppplus
from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem

__all__ = ["BENCHMARKS", "BenchmarkDataError", "Problem", "load_apps", "load_benchmark",
           "load_codecontests", "load_humaneval", "load_humanevalplus", "load_mbpp",
           "load_mbpp_sanitized", "load_mbppplus", "normalize_task_id"]

# The file a benchmark that needs a path reads, for the error when none is given.
DATA_FILES = {"mbpp": "mbpp.jsonl", "mbpp_sanitized": "sanitized-mbpp.json",
              "mbppplus": "MbppPlus.jsonl", "humanevalplus": HUMANEVALPLUS_SOURCE}

# name -> (loader, default split, does it need a path, task-id normaliser)
BENCHMARKS: dict[str, tuple[Callable, str | None, bool, Callable | None]] = {
    "humaneval": (load_humaneval, None, False, humaneval_task_id),
    "mbpp": (load_mbpp, "test", True, mbpp_task_id),
    "mbpp_sanitized": (load_mbpp_sanitized, "test", True, mbpp_task_id),
    "mbppplus": (load_mbppplus, None, True, mbpp_task_id),
    "humanevalplus": (load_humanevalplus, None, True, humaneval_task_id),
    "apps": (load_apps, "train", False, None),
    "codecontests": (load_codecontests, "train", False, None),
}


def load_benchmark(name: str, path: str | Path | None = None, split: str | None = "default",
                   **kwargs) -> list[Problem]:
    """Problems of benchmark ``name``; ``split="default"`` takes the benchmark's usual split
    (MBPP: test, APPS/CodeContests: train; HumanEval, MBPP+ and HumanEval+ have one split)."""
    if name not in BENCHMARKS:
        raise BenchmarkDataError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    loader, default_split, needs_path, _ = BENCHMARKS[name]
    if needs_path and path is None:
        raise BenchmarkDataError(f"{name}: no data path given; pass the path of its benchmark "
                                 f"file ({DATA_FILES[name]})")
    if split == "default":
        split = default_split
    if name == "humaneval":
        if split is not None:
            raise BenchmarkDataError(f"humaneval has a single split; got split={split!r}")
        return loader(path, **kwargs)
    return loader(path, split=split, **kwargs)


def normalize_task_id(name: str, raw: str | int) -> str:
    """A task id as samples files write it (``HumanEval/0``, ``Mbpp/2``, ``2``) in the form
    ``Problem.task_id`` uses."""
    if name not in BENCHMARKS:
        raise BenchmarkDataError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    normalizer = BENCHMARKS[name][3]
    return normalizer(raw) if normalizer else str(raw)
