"""What every teacher takes and gives back (the JAX-sampler teachers and the OpenAI-protocol one).

A teacher answers chat conversations: each request carries the turns to continue, how many
answers to write and how, and a per-item seed derived from the item's stable key, so an item
gets the same answers whatever batch or chunk it lands in (as far as the backend is
deterministic: our sampler is; a remote API is best-effort).
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Protocol


class TeacherUnavailable(RuntimeError):
    """The teacher could not be reached or kept failing after its retries. The stage stops; what
    is already saved stays, and the same command resumes."""


@dataclasses.dataclass(frozen=True)
class TeacherRequest:
    key: str                       # the item's stable key (problem / sample / ...)
    messages: list[dict[str, str]]  # chat turns {"role", "content"}, ending with a user turn
    n: int                         # answers wanted
    temperature: float
    top_p: float
    max_tokens: int
    seed: int                      # per-item seed in [0, 2**31): see `key_seed`


@dataclasses.dataclass(frozen=True)
class TeacherReply:
    texts: list[str]          # exactly n answers; "" where an answer could not be had
    errors: list[str]         # per answer: "" or why there is no answer (e.g. a 400 from the API)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Teacher(Protocol):
    name: str

    def answer(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        """One reply per request, in request order. Raises TeacherUnavailable when the backend
        is down (after retries); per-answer failures that retrying cannot fix go in `errors`."""

    def close(self) -> None:
        ...


def key_seed(*parts) -> int:
    """A 31-bit seed from an item's key parts (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
