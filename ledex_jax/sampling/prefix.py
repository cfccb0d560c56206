"""Shared prompt prefixes: prompts of one device call that begin with the same tokens (a
problem's refinement prompts share the problem; every prompt may share a system prompt) have
those tokens prefilled once, then each prompt's own rest attends to the shared keys.

This module only plans (pure Python/NumPy): which prompts share which prefix, and the two padded
blocks the compiled prefill takes. The cache layout it leads to is [prefix | rest | generated],
each block left-padded, so a row's real prompt slots have a gap of padding in the middle; the
positions count real tokens, so the model sees exactly the unshared prompt.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from ledex_jax.sampling.layout import left_pad


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Tokens `a` and `b` share at their start."""
    n = min(len(a), len(b))
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    differ = np.flatnonzero(x != y)
    return int(differ[0]) if differ.size else n


def prefix_clusters(ids: Sequence[Sequence[int]], min_shared: int) -> list[tuple[list[int], int]]:
    """[(members, shared length)]: groups of >= 2 prompts whose first `shared length` (>=
    `min_shared`) tokens are the same, chosen to save the most prefill tokens ((members - 1) x
    shared length, summed). Each prompt keeps at least its last token to itself. Prompts in no
    group are left out."""
    order = sorted(range(len(ids)), key=lambda i: tuple(ids[i]))
    lcp = [common_length(ids[a], ids[b]) for a, b in zip(order, order[1:])]
    out: list[tuple[list[int], int]] = []

    def split(lo: int, hi: int):  # order[lo:hi], neighbours' shared lengths lcp[lo:hi-1]
        if hi - lo < 2:
            return
        members = order[lo:hi]
        shared = _shared_length(ids, members, lcp[lo:hi - 1])
        at = lo + int(np.argmin(lcp[lo:hi - 1]))  # the weakest link: cluster apart there?
        left, right = _saving(ids, order[lo:at + 1], lcp[lo:at]), _saving(ids, order[at + 1:hi], lcp[at + 1:hi - 1])
        if shared >= min_shared and _saving(ids, members, lcp[lo:hi - 1]) >= left + right:
            out.append((members, shared))
        else:
            split(lo, at + 1)
            split(at + 1, hi)

    split(0, len(order))
    return out


def _shared_length(ids, members, lcp) -> int:
    """Tokens `members` (>= 2, neighbours in sorted order, their shared lengths `lcp`) can
    share: their common start, less the last token each must keep."""
    return min(min(lcp), min(len(ids[i]) for i in members) - 1)


def _saving(ids, members, lcp) -> int:
    """Prefill tokens saved by sharing one prefix among `members`."""
    if len(members) < 2:
        return 0
    return (len(members) - 1) * max(0, _shared_length(ids, members, lcp))


class PrefixPlan(NamedTuple):
    """One device call's prompts as shared prefixes + own rests (all arrays int32)."""
    prefix_ids: np.ndarray   # [U, Pp] left-padded shared prefixes (row 0 may be empty: no prefix)
    prefix_mask: np.ndarray  # [U, Pp]
    row_prefix: np.ndarray   # [G] which prefix row each prompt continues
    rest_ids: np.ndarray     # [G, Pr] left-padded rests
    rest_mask: np.ndarray    # [G, Pr]

    @property
    def width(self) -> int:
        return self.prefix_ids.shape[1] + self.rest_ids.shape[1]


def plan_prefixes(ids: Sequence[Sequence[int]], *, min_shared: int, samples: int, plain_width: int,
                  bucket: Callable[[int], int], prefix_rows: Callable[[int], int], pad_id: int) -> PrefixPlan | None:
    """The shared layout for prompts `ids` (one device call), or None when it would not cost less
    than the plain one. Cost, both ways: prompt tokens prefilled plus cache slots the
    len(ids) x `samples` rows decode over (`plain_width` per row for the plain layout).
    `bucket` pads each block's width, `prefix_rows` the number of prefix rows."""
    clusters = prefix_clusters(ids, min_shared) if min_shared > 0 else []
    if not clusters:
        return None
    prefixes: list[list[int]] = [[]]  # row 0: the empty prefix of prompts that share nothing
    row_prefix = np.zeros(len(ids), np.int32)
    cut = np.zeros(len(ids), np.int64)
    for members, shared in clusters:
        prefixes.append(list(ids[members[0]][:shared]))
        row_prefix[members], cut[members] = len(prefixes) - 1, shared
    if (row_prefix > 0).all():  # no prompt needs the empty row
        prefixes, row_prefix = prefixes[1:], row_prefix - 1
    rests = [list(seq[c:]) for seq, c in zip(ids, cut)]
    u = prefix_rows(len(prefixes))
    prefix_width, rest_width = bucket(max(map(len, prefixes))), bucket(max(map(len, rests)))
    shared_cost = u * prefix_width + len(ids) * rest_width + len(ids) * samples * (prefix_width + rest_width)
    plain_cost = len(ids) * plain_width * (1 + samples)
    if shared_cost >= plain_cost:
        return None
    prefixes += [prefixes[0]] * (u - len(prefixes))
    prefix_ids, prefix_mask = left_pad(prefixes, pad_id, prefix_width)
    rest_ids, rest_mask = left_pad(rests, pad_id, rest_width)
    return PrefixPlan(prefix_ids, prefix_mask, row_prefix, rest_ids, rest_mask)


def block_width(tokens: int) -> int:
    """Padded width of a prefix or rest block: 16, 20, 24, 28, 32, 40, ... (four steps per
    doubling, at most 25 % padding: two blocks padded apart must not cost what sharing saves)."""
    width = 16
    while True:
        for step in (width, width * 5 // 4, width * 3 // 2, width * 7 // 4):
            if step >= tokens:
                return step
        width *= 2


def call_order(ids: Sequence[Sequence[int]], min_shared: int) -> np.ndarray:
    """The order in which prompts fill device calls: by length (each call pads to a shorter
    bucket), except that prompts sharing a prefix (`prefix_clusters`) stay together, placed by
    their longest member."""
    key = [(len(seq), i, len(seq)) for i, seq in enumerate(ids)]
    for members, _ in (prefix_clusters(ids, min_shared) if min_shared > 0 else []):
        longest, first = max(len(ids[i]) for i in members), min(members)
        for i in members:
            key[i] = (longest, first, len(ids[i]))
    return np.asarray(sorted(range(len(ids)), key=key.__getitem__), np.int64)
