"""Stop strings, checked on the host between compiled decode chunks.

A stop string is text, and text only exists after detokenisation (a stop string can start or end
inside a token), so the device loop cannot see it. The sampler runs the loop in chunks; after each
chunk a `StopWatch` decodes each live row's new tokens (plus a short overlap, so a stop string
spanning the chunk boundary is seen) and looks for a stop string there. At the end a
stopped row is cut with `cut_tokens` (tokens up to and including the one that completes the stop
string, so a trainer sees the action that ended the episode) and its text is cut before the stop
string (the OpenAI/vLLM convention).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop-string occurrence in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def cut_tokens(tokens: Sequence[int], stops: Sequence[str], decode: Callable[[Sequence[int]], str]) -> int:
    """Smallest n such that decode(tokens[:n]) contains a stop string (len(tokens) if none does).

    Containment is monotone in n, so a binary search needs O(log n) decodes.
    """
    if first_stop(decode(tokens), stops) < 0:
        return len(tokens)
    lo, hi = 1, len(tokens)  # invariant: decode(tokens[:hi]) contains a stop string
    while lo < hi:
        mid = (lo + hi) // 2
        if first_stop(decode(tokens[:mid]), stops) >= 0:
            hi = mid
        else:
            lo = mid + 1
    return hi


class StopWatch:
    """Finds rows whose completion gained a stop string since the last check, decoding only the
    tokens added since then plus an overlap of `overlap` tokens (a stop string of c characters
    spans at most c tokens that print; tokenizers whose tokens can print nothing, e.g. partial
    UTF-8 bytes, get twice that and a margin). A row it misses is still cut exactly at the end
    (`cut_tokens`); it only stops later."""

    def __init__(self, stops: Sequence[str], decode: Callable[[Sequence[int]], str], rows: int):
        self.stops, self.decode = list(stops), decode
        self.overlap = 2 * max(len(s) for s in self.stops) + 4
        self.checked = np.zeros(rows, np.int64)  # tokens of each row already looked at

    def check(self, tokens: np.ndarray, lengths: np.ndarray, finished: np.ndarray) -> np.ndarray:
        """[rows] bool: live rows whose newest tokens complete a stop string."""
        hit = np.zeros(len(lengths), bool)
        for i in np.flatnonzero(~finished & (lengths > self.checked)):
            start = max(0, int(self.checked[i]) - self.overlap)
            hit[i] = first_stop(self.decode(tokens[i, start:lengths[i]].tolist()), self.stops) >= 0
            self.checked[i] = lengths[i]
        return hit
