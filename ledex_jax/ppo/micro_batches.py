"""Micro-batches of similar prompt length, each cut to the prompt width its rows need.

Rollout rows are [prompt | response] with prompts left-padded to one width W (the longest prompt
the sampler's bucket allows). A micro-batch of short prompts need not pay for W: its rows are
taken in order of prompt length and its leading columns that are padding in every row are
dropped, down to one of a few widths (each one compiled program). Dropping columns
that every row masks out changes no result: the positions travel with the tokens, and the
response columns are untouched. Gradient accumulation sums over micro-batches, so which rows
share one does not change the update either.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def length_groups(rows: np.ndarray, prompt_lens: np.ndarray, groups: int, width: int,
                  widths: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """Splits `rows` (indices into the batch) into `groups` equal micro-batches by prompt length.

    Returns [(row indices in ascending order, prompt columns to keep)]. `prompt_lens[r]`: row r's
    real prompt tokens; `width`: the padded prompt width W; a micro-batch keeps the smallest of
    `widths` that holds its longest prompt, or W."""
    rows, prompt_lens = np.asarray(rows), np.asarray(prompt_lens)
    if len(rows) % groups:
        raise ValueError(f"{len(rows)} rows do not split into {groups} equal micro-batches")
    allowed = sorted({w for w in widths if w < width} | {width})
    by_length = rows[np.argsort(prompt_lens[rows], kind="stable")]
    out = []
    for part in np.split(by_length, groups):
        need = int(prompt_lens[part].max())
        out.append((np.sort(part), next((w for w in allowed if w >= need), width)))
    return out
