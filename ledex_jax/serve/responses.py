"""OpenAI response bodies from engine `Generation`s: completions, chat completions, their
streamed chunks, and the usage block.

Log-probabilities are the raw model's (temperature 1), of the tokens actually chosen, EOS
excluded. Alternatives are not computed: `top_logprobs` lists only the chosen token, whatever
count was asked for (the sampler returns no top-k table).

Streaming is not incremental: a request's text is complete when its batch ends, then it is sent
as one content chunk per choice, a finish chunk, optionally a usage chunk, and `[DONE]`.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterator, Sequence

from ledex_jax.serve.engine import Choice, Generation


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(generations: Sequence[Generation]) -> dict:
    prompt = sum(g.prompt_tokens for g in generations)
    completion = sum(len(c.token_ids) for g in generations for c in g.choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _scored(choice: Choice, eos_ids: frozenset[int]) -> tuple[list[int], list[float]]:
    """The choice's tokens and log-probs without a final EOS token (it has no text)."""
    ids, lps = choice.token_ids, choice.logprobs
    if ids and choice.finish_reason == "stop" and ids[-1] in eos_ids:
        ids, lps = ids[:-1], lps[:-1]
    return ids, lps


def completion_logprobs(choice: Choice, tokenizer, eos_ids: frozenset[int]) -> dict:
    ids, lps = _scored(choice, eos_ids)
    tokens = [tokenizer.decode([t]) for t in ids]
    offsets, at = [], 0
    for tok in tokens:
        offsets.append(at)
        at += len(tok)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": [{t: lp} for t, lp in zip(tokens, lps)],
            "text_offset": offsets}


def chat_logprobs(choice: Choice, tokenizer, eos_ids: frozenset[int], top: int) -> dict:
    ids, lps = _scored(choice, eos_ids)
    content = []
    for t, lp in zip(ids, lps):
        tok = tokenizer.decode([t])
        entry = {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}
        entry["top_logprobs"] = [dict(entry)] if top > 0 else []
        content.append(entry)
    return {"content": content, "refusal": None}


def completion_body(model: str, generations: Sequence[Generation], logprobs: int | None, tokenizer,
                    eos_ids: frozenset[int]) -> dict:
    choices = []
    for g in generations:
        for c in g.choices:
            choices.append({"index": len(choices), "text": c.text, "finish_reason": c.finish_reason,
                            "logprobs": None if logprobs is None else completion_logprobs(c, tokenizer, eos_ids)})
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(generations)}


def chat_body(model: str, generation: Generation, logprobs: int | None, tokenizer, eos_ids: frozenset[int]) -> dict:
    choices = [{"index": i, "message": {"role": "assistant", "content": c.text, "refusal": None},
                "finish_reason": c.finish_reason,
                "logprobs": None if logprobs is None else chat_logprobs(c, tokenizer, eos_ids, logprobs)}
               for i, c in enumerate(generation.choices)]
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage([generation])}


def stream_events(body: dict, chat: bool, include_usage: bool) -> Iterator[str]:
    """Server-sent events for a finished response `body` (`chat_body` / `completion_body`)."""
    head = {"id": body["id"], "object": "chat.completion.chunk" if chat else "text_completion",
            "created": body["created"], "model": body["model"]}

    def event(choices, **extra) -> str:
        return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

    for c in body["choices"]:
        if chat:
            yield event([{"index": c["index"], "delta": {"role": "assistant", "content": c["message"]["content"]},
                          "logprobs": c["logprobs"], "finish_reason": None}])
            yield event([{"index": c["index"], "delta": {}, "logprobs": None, "finish_reason": c["finish_reason"]}])
        else:
            yield event([{"index": c["index"], "text": c["text"], "logprobs": c["logprobs"],
                          "finish_reason": c["finish_reason"]}])
    if include_usage:
        yield event([], usage=body["usage"])
    yield "data: [DONE]\n\n"
