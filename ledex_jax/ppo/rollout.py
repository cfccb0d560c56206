"""From RL rows to responses: prompts in LeDex's two formats, online samples or collected
(offline) trajectories, and where each response's explanation ends.

Row j of global batch draw i is asked in format `formats[i % len(formats)]`: "refine" (fixed
code only) or "explain_refine" (explanation, then fixed code). Every response is a row of the
sampler's [prompt | completion] layout (`sampling.layout.RescoringBatch`), so the learner scores
exactly the tokens that were sampled, up to and including the EOS or stop-string token and
never past it.
"""
from __future__ import annotations

import numpy as np

from ledex_jax.data import prompts as P
from ledex_jax.sampling.layout import left_pad
from ledex_jax.sampling.sampler import SampleOutput

FORMATS = ("refine", "explain_refine")


def parse_formats(spec: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in spec.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if not formats or bad:
        raise ValueError(f"config.rollout.formats={spec!r}: use a comma-separated list of {', '.join(FORMATS)}")
    return formats


def stop_strings(style: str) -> list[str]:
    """StarChat answers end with <|end|> (a string); chat templates end with the EOS token."""
    return [P.END] if style == "starchat" else []


def prompt_ids(row, fmt: str, style: str, tokenizer) -> list[int]:
    return P.encode_prompt(tokenizer, P.build_prompt(row.prompt_fields(), fmt, style, tokenizer), style)


def explanation_end(tokens, length: int, text: str, decode) -> int:
    """Index of the last token before the code block (-1: the code block starts at token 0, or
    there is no code block). Found by bisection on decoded prefixes: the first k tokens decode
    past the fence's first character exactly when token k-1 holds it."""
    start = P.code_block_start(text)
    if start is None or not text[:start].strip():
        return -1
    lo, hi = 1, int(length)
    while lo < hi:  # smallest k with len(decode(tokens[:k])) > start
        mid = (lo + hi) // 2
        if len(decode(tokens[:mid])) > start:
            hi = mid
        else:
            lo = mid + 1
    return lo - 2 if lo >= 2 else -1


def offline_output(rows, formats, draws, style: str, tokenizer, prompts, bucket_width: int,
                   max_new_tokens: int, pad_id: int, seed: int, step: int) -> SampleOutput:
    """The collected teacher answers as responses (LEDEX.md §3.4 `offline`): row j answers with
    trajectory k of its row, k drawn from (seed, step, j); cut to max_new_tokens."""
    end_ids = _end_ids(style, tokenizer)
    tokens = np.full((len(rows), max_new_tokens), pad_id, np.int32)
    lengths = np.zeros(len(rows), np.int32)
    stopped = np.zeros(len(rows), bool)
    texts = []
    for j, (row, fmt) in enumerate(zip(rows, formats)):
        if not row.trajectories:
            raise ValueError(f"rollout.mode='offline': RL row {row.id} has no collected trajectory to score")
        rng = np.random.default_rng([seed, step, int(draws[j])])
        traj = row.trajectories[int(rng.integers(len(row.trajectories)))]
        answer = P.answer_content({"refined_code": traj["code"], "explanation": traj["explanation"]}, fmt)
        ids = list(tokenizer.encode(answer, add_special_tokens=False)) + end_ids
        n = min(len(ids), max_new_tokens)
        tokens[j, :n], lengths[j], stopped[j] = ids[:n], n, n == len(ids)
        texts.append(answer)
    prompt_ids_, prompt_mask = left_pad(prompts, pad_id, bucket_width)
    zeros = np.zeros(tokens.shape, np.float32)
    return SampleOutput(tokens, zeros, zeros, lengths, stopped, texts, prompt_ids_, prompt_mask)


def _end_ids(style: str, tokenizer) -> list[int]:
    if style == "starchat":
        return list(tokenizer.encode(P.END, add_special_tokens=False))
    return [tokenizer.eos_token_id]
