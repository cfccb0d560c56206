"""`Engine`: one thread owns the `Sampler`; requests queue up and are answered in batched calls.

Calls run one after another. Each takes the oldest waiting request's group (same sampling knobs
and stop strings, `batching.next_call`) up to max_batch rows; requests that arrive while a call
runs join a later one. Before a call that is not yet full, the engine waits a little for more
requests (`_collect`: at most `batch_wait_s`, and no longer than `batch_gap_s` without a new
arrival), so clients that send their next request as soon as they get an answer land in the
same call.

The sampler's batch is static (a call runs until its longest row ends), so this is request-level
batching, not continuous batching: a row that ends early idles until its call ends.

An exception inside a call fails the futures of that call only; the thread keeps serving.
"""
from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from concurrent.futures import Future
from typing import Sequence

import numpy as np

from ledex_jax.sampling.stop import first_stop
from ledex_jax.serve import batching
from ledex_jax.serve.batching import GroupKey


class InvalidRequest(ValueError):
    """A request the engine cannot run; `param` names the request field at fault."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@dataclasses.dataclass(frozen=True)
class Params:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None


@dataclasses.dataclass
class Choice:
    text: str                 # cut before a stop string; special tokens skipped
    token_ids: list[int]      # what was generated (through a final EOS or the token ending a stop string)
    logprobs: list[float]     # log p(token) under the raw model (temperature 1), one per token_ids
    finish_reason: str        # "stop" (EOS or stop string) or "length"


@dataclasses.dataclass
class Generation:
    prompt_tokens: int
    choices: list[Choice]


@dataclasses.dataclass
class Job:
    prompt_ids: list[int]
    params: Params
    key: GroupKey
    future: Future

    @property
    def n(self) -> int:
        return self.params.n


class Engine:
    """Args:
      sampler: a `ledex_jax.sampling.Sampler` with a tokenizer (or anything with its
        `generate`, `max_prompt_len`, `config.max_position_embeddings`,
        `decode_text` and `traces`).
      max_batch: most rows (choices) in one device call; calls are padded to a power of two up to it.
      max_tokens_limit: the largest max_tokens a request may ask for (bounds the KV cache).
      batch_wait_s: the longest a call that is not full waits for more requests, counted from the
        previous call's end (or from the first request's arrival at an idle engine).
      batch_gap_s: ...but it stops waiting once no request has arrived for this long.
    """

    def __init__(self, sampler, *, max_batch: int = 32, max_tokens_limit: int = 2048, batch_wait_s: float = 0.25,
                 batch_gap_s: float = 0.05):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        self.sampler = sampler
        self.max_batch = max_batch
        self.context = int(sampler.config.max_position_embeddings)
        self.max_prompt_len = min(int(sampler.max_prompt_len), self.context - 1)
        self.max_tokens_limit = max_tokens_limit
        self.batch_wait_s, self.batch_gap_s = batch_wait_s, batch_gap_s
        self.eos_ids = _default_eos(sampler)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._stats = collections.Counter()
        self._batch_rows = collections.Counter()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "Engine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ledex-serve-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    # --- requests ------------------------------------------------------------------------
    def check(self, prompt_ids: Sequence[int], params: Params):
        """Raises `InvalidRequest` for what the sampler would refuse, before it is queued."""
        if not prompt_ids:
            raise InvalidRequest("prompt", "the prompt is empty; give at least one token")
        if len(prompt_ids) > self.max_prompt_len:
            raise InvalidRequest("prompt", f"the prompt has {len(prompt_ids)} tokens; this server accepts at most "
                                           f"{self.max_prompt_len} (start it with a larger --max_prompt_len, "
                                           f"up to the model's context of {self.context})")
        if params.n < 1:
            raise InvalidRequest("n", f"n={params.n} must be >= 1")
        if params.max_tokens < 1:
            raise InvalidRequest("max_tokens", f"max_tokens={params.max_tokens} must be >= 1")
        if params.max_tokens > self.max_tokens_limit:
            raise InvalidRequest("max_tokens", f"max_tokens={params.max_tokens} exceeds this server's limit of "
                                               f"{self.max_tokens_limit} (--max_tokens_limit)")
        if len(prompt_ids) + params.max_tokens > self.context:
            raise InvalidRequest("max_tokens", f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) "
                                               f"exceeds the model's context of {self.context} tokens")
        if params.temperature < 0:
            raise InvalidRequest("temperature", f"temperature={params.temperature} must be >= 0")
        if not 0 < params.top_p <= 1:
            raise InvalidRequest("top_p", f"top_p={params.top_p} must be in (0, 1]")

    def submit(self, prompt_ids: Sequence[int], params: Params) -> Future:
        """Queues one prompt; the future resolves to a `Generation` (or the call's exception)."""
        prompt_ids = [int(t) for t in prompt_ids]
        self.check(prompt_ids, params)
        job = Job(prompt_ids, params, batching.group_key(params.temperature, params.top_p, params.stop), Future())
        self._queue.put(job)
        return job.future

    def stats(self) -> dict:
        """Counters for monitoring and tests: generate calls, jobs, rows, padded rows, rows per
        call, failed calls, compiles (sampler traces)."""
        with self._lock:
            out = dict(self._stats)
            out["rows_per_call"] = {str(k): v for k, v in sorted(self._batch_rows.items())}
        try:
            out["traces"] = dict(getattr(self.sampler, "traces", {}))
        except RuntimeError:  # the engine thread traced a program mid-copy; the next read has it
            out["traces"] = {}
        out["queued"] = self._queue.qsize()
        return out

    def warmup(self, prompt_lens: Sequence[int], max_tokens: int, greedy: bool = True):
        """Compiles the programs of every batch size for prompts of each length in `prompt_lens`
        and `max_tokens` new tokens (greedy, or temperature sampling), in the calling thread;
        call it before `start()`. Other lengths still compile on first use."""
        sizes = sorted({batching.batch_bucket(r, self.max_batch) for r in range(1, self.max_batch + 1)})
        params = Params(max_tokens, temperature=0.0 if greedy else 1.0)
        key = batching.group_key(params.temperature, params.top_p, ())
        for length in prompt_lens:
            for rows in sizes:
                jobs = [Job([1] * length, params, key, Future()) for _ in range(rows)]
                self._run(jobs)
                jobs[0].future.result()  # a warm-up that fails says so

    # --- the thread ----------------------------------------------------------------------
    def _loop(self):
        pending: list[Job] = []
        last_end = time.monotonic()
        while True:
            if pending:  # they waited through the last call; its clients may be about to send more
                stopping = self._collect(pending, since=last_end, arrived=False)
            else:
                first = self._queue.get()
                if first is None:
                    return
                pending.append(first)
                stopping = self._collect(pending, since=time.monotonic(), arrived=True)
            pending = [j for j in pending if not j.future.cancelled()]
            if pending:
                call = batching.next_call(pending, self.max_batch)
                taken = {id(j) for j in call}
                pending = [j for j in pending if id(j) not in taken]
                live = [j for j in call if j.future.set_running_or_notify_cancel()]
                if live:
                    self._count(jobs=len(live))
                    self._run(live)
                last_end = time.monotonic()
            if stopping:
                for job in pending:
                    _resolve(job.future, exception=RuntimeError("the server is shutting down"))
                return

    def _collect(self, pending: list[Job], since: float, arrived: bool) -> bool:
        """Moves queued jobs into `pending`. While the next call is not full it waits for more:
        until `batch_wait_s` after `since` (the previous call's end, or the first arrival at an
        idle engine), or until no request came for `batch_gap_s` after one came (`arrived`: one
        just did). Clients that send their next request when they get an answer arrive in a
        burst after a call ends (spread over tens of milliseconds, more when the CPU is busy);
        without the wait they would miss the next call and run apart in small ones. An idle
        engine with nothing pending does not wait at all after a call. True when the stop
        sentinel came."""
        deadline, quiet_from = since + self.batch_wait_s, since if arrived else None
        while True:
            until = deadline if quiet_from is None else min(deadline, quiet_from + self.batch_gap_s)
            wait = until - time.monotonic()
            try:
                if wait <= 0 or batching.call_rows(pending, self.max_batch) >= self.max_batch:
                    job = self._queue.get_nowait()
                else:
                    job = self._queue.get(timeout=wait)
            except queue.Empty:
                return False
            if job is None:
                return True
            pending.append(job)
            quiet_from = time.monotonic()

    def _run(self, jobs: list[Job]):
        """One generate call for jobs of one group; resolves their futures."""
        try:
            results = self._generate(jobs)
        except Exception as exc:  # noqa: BLE001 - the call's requests get a 500, the server lives
            self._count(failed_calls=1)
            for job in jobs:
                _resolve(job.future, exception=exc)
            return
        for job, result in zip(jobs, results):
            _resolve(job.future, result=result)

    def _generate(self, jobs: list[Job]) -> list[Generation]:
        key = jobs[0].key
        prompts = [job.prompt_ids for job in jobs for _ in range(job.n)]
        rows = [batching.row_id(job.params.seed, i) for job in jobs for i in range(job.n)]
        room = self.context - max(map(len, prompts))
        max_new = batching.new_tokens_bucket(max(job.params.max_tokens for job in jobs), room)
        batch = batching.batch_bucket(len(prompts), self.max_batch)
        out = self.sampler.generate(prompts, max_new, temperature=key.temperature, top_p=key.top_p,
                                    greedy=key.greedy, stop=list(key.stop) or None, seed=batching.CALL_SEED,
                                    row_ids=rows, max_batch=batch)
        self._count(generate_calls=1, rows=len(prompts), padded_rows=-len(prompts) % batch)
        with self._lock:
            self._batch_rows[len(prompts)] += 1
        results, r = [], 0
        for job in jobs:
            choices = [self._choice(out, r + i, job.params) for i in range(job.n)]
            results.append(Generation(len(job.prompt_ids), choices))
            r += job.n
        return results

    def _choice(self, out, r: int, params: Params) -> Choice:
        """Row r of a call, cut at its own max_tokens (the call may have generated more)."""
        length = int(out.lengths[r])
        if length > params.max_tokens:
            length, text, reason = params.max_tokens, None, "length"
        else:
            text, reason = out.texts[r], "stop" if bool(out.stopped[r]) else "length"
        ids = [int(t) for t in out.tokens[r, :length]]
        if text is None:
            text = self.sampler.decode_text(ids)
            at = first_stop(text, params.stop)  # a stop string completed by the cut's last token
            if at >= 0:
                text, reason = text[:at], "stop"
        return Choice(text, ids, [float(x) for x in np.asarray(out.logprobs[r, :length])], reason)

    def _count(self, **deltas):
        with self._lock:
            self._stats.update(deltas)


def _default_eos(sampler) -> frozenset[int]:
    """The ids generate() stops on by default (eos_ids=None): the model's and the tokenizer's EOS."""
    found = [sampler.config.eos_token_id, getattr(sampler.tokenizer, "eos_token_id", None)]
    return frozenset(int(e) for x in found for e in (x if isinstance(x, (list, tuple)) else [x]) if e is not None)


def _resolve(future: Future, result=None, exception: BaseException | None = None):
    """Sets a future unless its client went away (cancelled) meanwhile."""
    if future.done():
        return
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except Exception:  # noqa: BLE001 - InvalidStateError: cancelled between the check and the set
        pass
