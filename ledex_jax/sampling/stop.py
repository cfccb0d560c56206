"""Stop strings, checked on the host between compiled decode chunks.

A stop string is text, and text only exists after detokenisation (a stop string can start or end
inside a token), so the device loop cannot see it. The sampler runs the loop in chunks; after each
chunk `first_stop` looks for a stop string in each live row's decoded completion. At the end a
stopped row is cut with `cut_tokens` (tokens up to and including the one that completes the stop
string, so a trainer sees the action that ended the episode) and its text is cut before the stop
string (the OpenAI/vLLM convention).
"""
from __future__ import annotations

from typing import Callable, Sequence


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
