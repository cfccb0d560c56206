"""Pure planning for the engine: which queued jobs share one `Sampler.generate` call, and the
padded sizes that call uses.

- Calls are taken one at a time, oldest request first (`next_call`), so a request that arrives
  while a call runs can still join the next call of its group.
- A group shares every per-call knob of `generate`: greedy or (temperature, top_p), and the stop
  set. Stop strings are grouped on, not unioned: the sampler cuts a row at the first stop string
  of its call, so a union would cut a row at a string its own request never asked for.
- max_tokens may differ inside a group: the call generates to the group's largest, rounded up
  to a power of two (`new_tokens_bucket`), and each row is cut at its own max_tokens afterwards.
- Rows (a job's n choices each) are padded to a power of two up to max_batch
  (`batch_bucket`), so a server sees few distinct shapes and compiles few programs.
- Randomness: each choice samples from the stream `row_id(seed, index)` of one fixed call seed,
  so a seeded request gives the same text whatever it is batched with.
"""
from __future__ import annotations

import hashlib
import secrets
from typing import NamedTuple, Sequence

CALL_SEED = 0          # the seed of every generate call; requests differ by row id
MIN_NEW_TOKENS = 16    # smallest max_new_tokens bucket


class GroupKey(NamedTuple):
    greedy: bool
    temperature: float  # 0.0 when greedy
    top_p: float        # 1.0 when greedy
    stop: tuple[str, ...]


def group_key(temperature: float, top_p: float, stop: Sequence[str]) -> GroupKey:
    stop = tuple(sorted({s for s in stop if s}))
    if temperature == 0:
        return GroupKey(True, 0.0, 1.0, stop)
    return GroupKey(False, float(temperature), float(top_p), stop)


def row_id(seed: int | None, index: int) -> int:
    """The random stream of choice `index` of a request: a hash of (seed, index), or a fresh
    random stream when the request gave no seed. 31 bits: the sampler keeps row ids as int32."""
    if seed is None:
        return secrets.randbits(31)
    digest = hashlib.blake2b(f"{int(seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def batch_bucket(rows: int, max_batch: int) -> int:
    """Rows per device call: the next power of two >= rows, at most max_batch."""
    b = 1
    while b < rows:
        b *= 2
    return min(b, max_batch)


def new_tokens_bucket(max_tokens: int, room: int) -> int:
    """max_new_tokens of a call whose rows want at most `max_tokens`: the next power of two
    (>= MIN_NEW_TOKENS), unless that would pass `room` (what the model's context leaves)."""
    b = MIN_NEW_TOKENS
    while b < max_tokens:
        b *= 2
    return b if b <= room else max_tokens


def next_call(pending: Sequence, max_batch: int) -> list:
    """The jobs (anything with `.key` and `.n`, oldest first) of the next generate call: the
    oldest job's group, in arrival order, up to max_batch rows. Jobs that do not fit wait for a
    later call; a job with n > max_batch goes alone (the sampler runs it in several device calls)."""
    key, call, rows = pending[0].key, [], 0
    for job in pending:
        if job.key != key:
            continue
        if call and rows + job.n > max_batch:
            break
        call.append(job)
        rows += job.n
    return call


def call_rows(pending: Sequence, max_batch: int) -> int:
    """Rows the next call would have now (a wait for more requests can end once it is full)."""
    return sum(job.n for job in next_call(pending, max_batch)) if pending else 0
