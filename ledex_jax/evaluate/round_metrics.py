"""The numbers of a self-debug evaluation (LEDEX.md §4), as pure functions of verdicts.

A round's verdicts map each task to one bool per sample: whether the sample's code after that
round passes (round 0: the initial samples). From consecutive rounds of one refinement chain come
pass@k (the unbiased estimator over the task's n samples), how many samples were wrong before
the round and so refined in it, how many of those pass now, and their ratio, the success
refinement rate. The overall row averages the benchmarks weighted by their number of problems,
as the paper does; counts are summed.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ledex_jax.evaluate.pass_at_k import count_correct, mean_pass_at_k

Verdicts = Mapping[str, Sequence[bool]]  # task_id -> one verdict per sample, in sample order
COUNTS = ("passed", "wrong", "refined", "fixed")


def usable_ks(ks: Iterable[int], n: int) -> tuple[int, ...]:
    """The k of ``ks`` that n samples per task can estimate (pass@k needs n >= k)."""
    return tuple(k for k in ks if k <= n)


def round_numbers(index: int, after: Verdicts, ks: Sequence[int],
                  before: Verdicts | None = None) -> dict:
    """One round's record: pass@k and pass/wrong counts of ``after``; with ``before`` (the
    verdicts one round earlier) also refined, fixed and success_rate (None when nothing was
    refined). Raises ValueError when a task has fewer samples than some k."""
    counts = count_correct((task, ok) for task, verdicts in after.items() for ok in verdicts)
    record: dict = {"round": index, **mean_pass_at_k(counts, ks)}
    passed = sum(c for _, c in counts.values())
    record.update(passed=passed, wrong=sum(n for n, _ in counts.values()) - passed)
    if before is None:
        return record
    if set(before) != set(after):
        raise ValueError(f"round {index}: the tasks differ from round {index - 1}'s "
                         f"({sorted(set(before) ^ set(after))[:3]} ...)")
    refined = fixed = 0
    for task, verdicts in after.items():
        earlier = before[task]
        if len(earlier) != len(verdicts):
            raise ValueError(f"round {index}: task {task} has {len(verdicts)} samples, "
                             f"{len(earlier)} the round before")
        for j, (was, now) in enumerate(zip(earlier, verdicts)):
            if was and not now:
                raise ValueError(f"round {index}: task {task} sample {j} passed before and fails "
                                 "now, but passing samples are never refined")
            refined += not was
            fixed += (not was) and bool(now)
    record.update(refined=refined, fixed=fixed, success_rate=fixed / refined if refined else None)
    return record


def chain_numbers(rounds: Sequence[Verdicts], ks: Sequence[int]) -> list[dict]:
    """Records of rounds 0, 1, ... of one chain (``rounds[r]``: the verdicts after round r)."""
    return [round_numbers(r, after, ks, rounds[r - 1] if r else None)
            for r, after in enumerate(rounds)]


def overall(benchmarks: Mapping[str, Mapping]) -> dict:
    """``{"problems", "rounds"}`` over benchmarks given as ``name -> {"problems": P, "rounds":
    {method: [records]}}``: pass@k and success_rate are averages weighted by P (a benchmark
    whose success_rate is None, nothing refined, is left out of that average; pass@k only where
    every benchmark has it), counts are sums."""
    if not benchmarks:
        raise ValueError("overall: no benchmarks to average over")
    items = list(benchmarks.items())
    layout = {m: len(recs) for m, recs in items[0][1]["rounds"].items()}
    for name, bench in items[1:]:
        other = {m: len(recs) for m, recs in bench["rounds"].items()}
        if other != layout:
            raise ValueError(f"overall: benchmark {name} has rounds {other}, {items[0][0]} has "
                             f"{layout}; run every benchmark with the same settings")
    rounds = {m: [_weighted([(b["problems"], b["rounds"][m][r]) for _, b in items])
                  for r in range(count)] for m, count in layout.items()}
    return {"problems": sum(b["problems"] for _, b in items), "rounds": rounds}


def _weighted(parts: list[tuple[int, Mapping]]) -> dict:
    """One overall round record from (problems, record) of every benchmark."""
    first = parts[0][1]
    record: dict = {"round": first["round"]}
    metrics = [key for key in first if key.startswith("pass@")
               and all(key in rec for _, rec in parts)]
    for key in metrics:
        record[key] = _average([(w, rec[key]) for w, rec in parts])
    for key in COUNTS:
        if key in first:
            record[key] = sum(rec[key] for _, rec in parts)
    if "success_rate" in first:
        rated = [(w, rec["success_rate"]) for w, rec in parts if rec["success_rate"] is not None]
        record["success_rate"] = _average(rated) if rated else None
    return record


def _average(pairs: list[tuple[int, float]]) -> float:
    total = sum(w for w, _ in pairs)
    if total <= 0:
        raise ValueError("overall: the benchmarks have no problems to weight by")
    return sum(w * v for w, v in pairs) / total
