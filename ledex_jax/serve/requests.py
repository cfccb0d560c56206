"""From a parsed OpenAI request to what the engine runs: prompt token ids and `Params`.

Defaults follow the OpenAI API (temperature 1, top_p 1, n 1; completions max_tokens 16), except
a chat request without max_tokens, which gets the server's `default_max_tokens` (bounded by
what the context leaves) instead of "the rest of the context". Features the sampler cannot
honour (penalties, logit_bias, best_of, echo, suffix, tools, JSON mode) are refused with a 400
naming the field, never silently ignored.

Prompts are tokenised as the project does it (`ledex_jax.data.prompts.encode_prompt`): a chat
prompt is the tokenizer's chat template text encoded without adding special tokens (the
template writes its own); a completion prompt gets BOS where the tokenizer adds one by default.
"""
from __future__ import annotations

from typing import NamedTuple

from ledex_jax.data.prompts import encode_prompt
from ledex_jax.serve.engine import Params
from ledex_jax.serve.schemas import ChatRequest, CompletionRequest, bad_request

MAX_N = 128
MAX_STOPS = 16
MAX_COMPLETION_LOGPROBS = 5
MAX_TOP_LOGPROBS = 20


class Inputs(NamedTuple):
    prompts: list[list[int]]  # one or more prompts (completions may batch several)
    params: Params
    logprobs: int | None      # None: no logprobs; else how many alternatives were asked for


def completion_inputs(req: CompletionRequest, tokenizer) -> Inputs:
    _refuse_unsupported(req)
    if req.echo:
        raise bad_request("echo", "echo=true is not supported by this server")
    if req.suffix:
        raise bad_request("suffix", "suffix (insertion) is not supported by this server")
    n = _n(req.n)
    if req.best_of is not None and req.best_of != n:
        raise bad_request("best_of", f"best_of={req.best_of} is not supported; leave it unset or equal to n")
    if req.logprobs is not None and not 0 <= req.logprobs <= MAX_COMPLETION_LOGPROBS:
        raise bad_request("logprobs", f"logprobs={req.logprobs} must be between 0 and {MAX_COMPLETION_LOGPROBS}")
    prompts = _completion_prompts(req.prompt, tokenizer)
    max_tokens = 16 if req.max_tokens is None else req.max_tokens
    return Inputs(prompts, _params(req, max_tokens, n), req.logprobs)


def chat_inputs(req: ChatRequest, tokenizer, default_max_tokens: int, context: int) -> Inputs:
    _refuse_unsupported(req)
    if req.tools:
        raise bad_request("tools", "tool calling is not supported by this server")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise bad_request("response_format", "only response_format {'type': 'text'} is supported")
    if req.top_logprobs is not None:
        if not req.logprobs:
            raise bad_request("top_logprobs", "top_logprobs needs logprobs=true")
        if not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
            raise bad_request("top_logprobs",
                              f"top_logprobs={req.top_logprobs} must be between 0 and {MAX_TOP_LOGPROBS}")
    n = _n(req.n)
    ids = encode_prompt(tokenizer, chat_text(req, tokenizer), style="chat_template")
    given = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    max_tokens = given if given is not None else max(1, min(default_max_tokens, context - len(ids)))
    if given is not None and given < 1:
        raise bad_request(param, f"{param}={given} must be >= 1")
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    return Inputs([ids], _params(req, max_tokens, n), logprobs)


def chat_text(req: ChatRequest, tokenizer) -> str:
    """The generation prompt: the messages through the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise bad_request("messages", "this model's tokenizer has no chat template, so /v1/chat/completions "
                          "cannot build a prompt; use /v1/completions with a plain prompt, or serve a "
                          "tokenizer that has one (--tokenizer)", code="no_chat_template")
    messages = [{"role": m.role, "content": _content(m.content, i)} for i, m in enumerate(req.messages)]
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - templates raise on e.g. roles out of order
        raise bad_request("messages", f"the chat template rejected these messages: {exc}") from exc


def _content(content, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise bad_request(f"messages[{index}].content", f"content part of type {part.get('type')!r} is not "
                              "supported; only {'type': 'text', 'text': ...} parts are")
        parts.append(part["text"])
    return "".join(parts)


def _completion_prompts(prompt, tokenizer) -> list[list[int]]:
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise bad_request("prompt", "prompt is an empty list")
    if all(isinstance(p, int) for p in prompt):  # one prompt as token ids
        prompt = [prompt]
    vocab = len(tokenizer)
    out = []
    for i, p in enumerate(prompt):
        ids = encode_prompt(tokenizer, p, style="starchat") if isinstance(p, str) else list(p)
        if not ids:
            raise bad_request("prompt", f"prompt {i} is empty; give at least one token")
        if any(not 0 <= t < vocab for t in ids):
            raise bad_request("prompt", f"prompt {i} has token ids outside the vocabulary [0, {vocab})")
        out.append(ids)
    return out


def _n(n: int | None) -> int:
    n = 1 if n is None else n
    if not 1 <= n <= MAX_N:
        raise bad_request("n", f"n={n} must be between 1 and {MAX_N}")
    return n


def _params(req, max_tokens: int, n: int) -> Params:
    if max_tokens < 1:
        raise bad_request("max_tokens", f"max_tokens={max_tokens} must be >= 1")
    temperature = 1.0 if req.temperature is None else req.temperature
    if temperature < 0:
        raise bad_request("temperature", f"temperature={temperature} must be >= 0")
    top_p = 1.0 if req.top_p is None else req.top_p
    if not 0 < top_p <= 1:
        raise bad_request("top_p", f"top_p={top_p} must be in (0, 1]")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > MAX_STOPS:
        raise bad_request("stop", f"at most {MAX_STOPS} stop strings are supported, got {len(stop)}")
    return Params(max_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
                  stop=tuple(s for s in stop if s), n=n, seed=req.seed)


def _refuse_unsupported(req) -> None:
    for field in ("presence_penalty", "frequency_penalty"):
        if getattr(req, field):
            raise bad_request(field, f"{field} is not supported by this server; leave it unset or 0")
    if req.logit_bias:
        raise bad_request("logit_bias", "logit_bias is not supported by this server")
