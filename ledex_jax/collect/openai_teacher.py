"""A teacher over any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, TGI, ...).

LeDex's main teacher is GPT-3.5-Turbo behind an API, so data collection must survive what APIs do:
rate limits, 5xx, timeouts, servers that ignore `n`, and a prompt that is too long for the
context. The retry policy is ours (the client's own retries are off) so it is one readable loop
that the tests can drive: transient failures back off and retry, and when they do not stop the
stage stops with `TeacherUnavailable` (saved work stays; the same command resumes). A request the
API refuses for its own content (a 400) fails only that request's answers, which downstream counts
as failed refinements.

The API key is read from an environment variable and lives only inside the client: it is never
put in reprs, logs, exceptions or replies (error texts from the server are scrubbed of it too).
"""
from __future__ import annotations

import concurrent.futures
import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import openai

from ledex_jax.collect.teacher_api import TeacherReply, TeacherRequest, TeacherUnavailable

log = logging.getLogger(__name__)

_NO_KEY = "unused"           # sent to local servers that need no key (api_key_env="")
_RETRY_STATUS = {408, 409, 429}  # plus every 5xx
_FATAL_STATUS = {401: "check the key in the API key variable",
                 403: "check that the key may use this model",
                 404: "check `model` and `base_url` (the endpoint should end in /v1)"}
_MAX_ERROR_CHARS = 500


class _Abort(Exception):
    """Another request of the same batch already gave up; stop quietly."""


class OpenAITeacher:
    """Answers `TeacherRequest`s through `client.chat.completions.create`, `max_concurrency` at once.

    `usage` keeps running totals for stats.json: `requests` (TeacherRequests answered), `calls`
    (API calls that returned), `retries`, `prompt_tokens`, `completion_tokens`, and
    `failed_requests` (TeacherRequests with answers lost to a non-retryable error).
    """

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout: float = 120.0, max_retries: int = 6,
                 backoff_initial: float = 1.0, backoff_max: float = 60.0,
                 extra_body: dict[str, Any] | None = None):
        if not isinstance(model, str) or not model:
            raise ValueError("OpenAITeacher: `model` must be a non-empty model name, e.g. 'gpt-3.5-turbo'")
        _check(max_concurrency >= 1, "max_concurrency", max_concurrency, "use 1 or more")
        _check(timeout > 0, "timeout", timeout, "use seconds > 0")
        _check(max_retries >= 0, "max_retries", max_retries, "use 0 or more")
        _check(backoff_initial >= 0, "backoff_initial", backoff_initial, "use seconds >= 0")
        _check(backoff_max >= backoff_initial, "backoff_max", backoff_max,
               f"use seconds >= backoff_initial ({backoff_initial})")
        if extra_body is not None and not isinstance(extra_body, dict):
            raise ValueError(f"OpenAITeacher: `extra_body` must be a dict of extra JSON fields, got "
                             f"{type(extra_body).__name__}")
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise ValueError(
                    f"OpenAITeacher: environment variable {api_key_env} (named by `api_key_env`) is not "
                    f"set; export it with the API key, or pass api_key_env='' for a local server that "
                    f"needs no key")
        else:
            key = _NO_KEY
        self.model = model
        self.name = f"openai:{model}"
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.extra_body = dict(extra_body) if extra_body else None
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self.endpoint = str(self._client.base_url).rstrip("/")
        self._secret = key if api_key_env else None
        self._rng = random.Random()
        self._lock = threading.Lock()
        self.usage = dict(requests=0, calls=0, retries=0, prompt_tokens=0, completion_tokens=0,
                          failed_requests=0)

    def __repr__(self) -> str:
        return (f"OpenAITeacher(name={self.name!r}, endpoint={self.endpoint!r}, "
                f"max_concurrency={self.max_concurrency}, max_retries={self.max_retries})")

    __str__ = __repr__

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def answer(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        """One reply per request, in request order; the first request to exhaust its retries
        stops the others and raises `TeacherUnavailable`."""
        requests = list(requests)
        if not requests:
            return []
        abort = threading.Event()
        replies: list[TeacherReply | None] = [None] * len(requests)
        pool = concurrent.futures.ThreadPoolExecutor(min(self.max_concurrency, len(requests)),
                                                     thread_name_prefix="openai-teacher")
        try:
            futures = {pool.submit(self._answer_one, r, abort): i for i, r in enumerate(requests)}
            for future in concurrent.futures.as_completed(futures):
                replies[futures[future]] = future.result()
        except BaseException:
            abort.set()
            raise
        finally:
            # On an error do not wait for calls still in flight: they see `abort` and stop.
            pool.shutdown(wait=not abort.is_set(), cancel_futures=True)
        return replies  # type: ignore[return-value]

    # --- one request -------------------------------------------------------------------------

    def _answer_one(self, req: TeacherRequest, abort: threading.Event) -> TeacherReply:
        """Calls until `req.n` answers are in: servers that ignore `n` get further calls with
        seed + (answers so far), so answer j is seeded seed + j there."""
        if req.n < 0:
            raise ValueError(f"TeacherRequest {req.key!r}: n={req.n}; use n >= 0")
        texts: list[str] = []
        errors: list[str] = []
        prompt_tokens = completion_tokens = 0
        failed = False
        while len(texts) < req.n:
            want = req.n - len(texts)
            result = self._call(req, want, (req.seed + len(texts)) % 2**31, abort)
            if isinstance(result, str):  # non-retryable: the rest of this request's answers fail
                texts += [""] * want
                errors += [result] * want
                failed = True
                break
            usage = getattr(result, "usage", None)
            prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
            choices = sorted(result.choices or [], key=lambda c: c.index or 0)[:want]
            if not choices:
                note = f"{self.endpoint} returned no choices"
                texts += [""] * want
                errors += [note] * want
                break
            for choice in choices:
                content = choice.message.content if choice.message is not None else None
                texts.append(content or "")
                errors.append("" if content else
                              f"empty answer from {self.endpoint} (finish_reason={choice.finish_reason})")
        with self._lock:
            self.usage["requests"] += 1
            self.usage["failed_requests"] += int(failed)
            self.usage["prompt_tokens"] += prompt_tokens
            self.usage["completion_tokens"] += completion_tokens
        return TeacherReply(texts=texts, errors=errors, prompt_tokens=prompt_tokens,
                            completion_tokens=completion_tokens)

    def _call(self, req: TeacherRequest, n: int, seed: int, abort: threading.Event):
        """One chat completion with our retry policy: the response, or a str saying why this
        request cannot be answered (non-retryable 4xx). Raises TeacherUnavailable."""
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise _Abort()
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=req.messages, n=n, temperature=req.temperature,
                    top_p=req.top_p, max_tokens=req.max_tokens, seed=seed, extra_body=self.extra_body)
                with self._lock:
                    self.usage["calls"] += 1
                return response
            except openai.APIStatusError as err:
                status = err.status_code
                last = f"HTTP {status}: {self._scrub(err.message)}"
                if status in _FATAL_STATUS:
                    raise TeacherUnavailable(
                        f"{self.name} at {self.endpoint} refused the request ({last}); "
                        f"{_FATAL_STATUS[status]}, then rerun the same command to resume") from None
                if status not in _RETRY_STATUS and status < 500:
                    log.warning("%s: request %s failed without retry: %s", self.name, req.key, last)
                    return f"{last} (from {self.endpoint})"
                delay = _retry_after(err.response.headers)
            except openai.APITimeoutError:
                last, delay = "timed out", None
            except openai.APIConnectionError as err:
                last, delay = f"connection error: {self._scrub(str(err.__cause__ or err))}", None
            if attempt == self.max_retries:
                break
            if delay is None:
                delay = self._backoff(attempt)
            delay = min(delay, self.backoff_max)
            with self._lock:
                self.usage["retries"] += 1
            log.info("%s: %s from %s; retry %d/%d in %.2fs", self.name, last, self.endpoint,
                     attempt + 1, self.max_retries, delay)
            if abort.wait(delay):
                raise _Abort()
        raise TeacherUnavailable(
            f"{self.name} at {self.endpoint} kept failing after {self.max_retries} retries "
            f"(last: {last}); what is saved stays, and rerunning the same command resumes") from None

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter in [half, full] so parallel workers spread out."""
        cap = min(self.backoff_max, self.backoff_initial * 2**attempt)
        with self._lock:
            return cap * (0.5 + 0.5 * self._rng.random())

    def _scrub(self, text: str) -> str:
        """Server error texts may echo request headers; the key never leaves this object."""
        text = str(text)
        if self._secret:
            text = text.replace(self._secret, "<redacted>")
        return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def _retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, or Retry-After seconds or HTTP date)."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _check(ok: bool, field: str, value, fix: str) -> None:
    if not ok:
        raise ValueError(f"OpenAITeacher: `{field}`={value!r} is out of range; {fix}")
