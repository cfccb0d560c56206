"""Unbiased pass@k (Chen et al. 2021) and its average over tasks.

pass@k for one task with n samples of which c are correct is 1 - C(n-c, k) / C(n, k): the
chance that k samples drawn without replacement contain a correct one. The binomials overflow
floats for n in the hundreds, so it is computed as the product
1 - prod_{i=n-c+1..n} (1 - k/i), which only multiplies numbers in [0, 1].
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k for one task: ``n`` samples, ``c`` of them correct."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or int(value) != value:
            raise TypeError(f"pass_at_k: {name} must be an integer, got {value!r}")
    n, c, k = int(n), int(c), int(k)
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if n < k:
        raise ValueError(
            f"pass_at_k: pass@{k} needs at least {k} samples per task, this task has n={n}; "
            f"sample more or drop k={k}")
    if n - c < k:  # every draw of k samples holds a correct one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_per_task(counts: Mapping[str, tuple[int, int]], k: int) -> dict[str, float]:
    """pass@k of every task; ``counts`` maps task_id -> (n, c)."""
    out = {}
    for task_id, (n, c) in counts.items():
        try:
            out[task_id] = pass_at_k(n, c, k)
        except ValueError as err:
            raise ValueError(f"task {task_id}: {err}") from None
    return out


def mean_pass_at_k(counts: Mapping[str, tuple[int, int]],
                   ks: Iterable[int] = (1, 10)) -> dict[str, float]:
    """``{"pass@k": mean over tasks}`` for every k; every task must have n >= k."""
    if not counts:
        raise ValueError("mean_pass_at_k: no tasks to average over")
    result = {}
    for k in ks:
        per_task = pass_at_k_per_task(counts, k)
        result[f"pass@{k}"] = sum(per_task.values()) / len(per_task)
    return result


def count_correct(results: Iterable[tuple[str, bool]]) -> dict[str, tuple[int, int]]:
    """(task_id, passed) pairs, one per sample -> task_id -> (n, c), in first-seen order."""
    counts: dict[str, list[int]] = {}
    for task_id, passed in results:
        n_c = counts.setdefault(task_id, [0, 0])
        n_c[0] += 1
        n_c[1] += bool(passed)
    return {task_id: (n, c) for task_id, (n, c) in counts.items()}


def parse_ks(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,10"`` -> (1, 10); rejects anything but positive integers."""
    items = text.split(",") if isinstance(text, str) else list(text)
    ks = []
    for item in items:
        try:
            k = int(str(item).strip())
        except ValueError:
            raise ValueError(f"k values must be positive integers like '1,10', got {text!r}") from None
        if k < 1:
            raise ValueError(f"k values must be positive integers like '1,10', got {text!r}")
        ks.append(k)
    if not ks:
        raise ValueError("no k given; pass e.g. '1,10'")
    return tuple(dict.fromkeys(ks))
