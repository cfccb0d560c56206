"""Row layouts shared by the sampler and its users: left-padded prompts, and the
[prompt | completion] batch a learner rescores (PPO's log-probs, values and KL are computed on
exactly the tokens the sampler produced, at the positions it produced them)."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from ledex_jax.models.kv_cache import default_positions


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int32 [B, width] with rows right-aligned (width: longest row)."""
    width = max(len(r) for r in rows) if width is None else width
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"left_pad: row {i} has {len(r)} tokens, more than width={width}")
        if len(r):
            ids[i, width - len(r):] = r
            mask[i, width - len(r):] = 1
    return ids, mask


class RescoringBatch(NamedTuple):
    """[prompt | completion] rows, [N, P + M]. `targets[:, t]` is the token after position t;
    `target_mask` is 1 where that target is a completion token, so

        log_probs = model.target_log_probs(input_ids, targets, attention_mask, positions=positions)
        log_probs[:, P - 1 : P - 1 + M] == SampleOutput.logprobs   (`completion_columns`)
    """
    input_ids: np.ndarray
    attention_mask: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    target_mask: np.ndarray
    prompt_width: int

    def completion_columns(self, x):
        """[N, P + M] values aligned with `targets` -> [N, M] aligned with the completion tokens."""
        p, m = self.prompt_width, self.input_ids.shape[1] - self.prompt_width
        return x[:, p - 1:p - 1 + m]


def rescoring_batch(prompt_ids, prompt_mask, tokens, lengths) -> RescoringBatch:
    """Builds the layout from left-padded prompts [N, P] and completions [N, M] of `lengths`
    tokens (pad past them). Positions count real tokens, as the sampler's did."""
    n, p = prompt_ids.shape
    m = tokens.shape[1]
    completion_mask = (np.arange(m)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    input_ids = np.concatenate([prompt_ids, tokens], axis=1).astype(np.int32)
    attention_mask = np.concatenate([prompt_mask, completion_mask], axis=1).astype(np.int32)
    positions = np.asarray(default_positions(attention_mask), np.int32)
    targets = np.concatenate([input_ids[:, 1:], np.zeros((n, 1), np.int32)], axis=1)
    target_mask = np.concatenate([np.zeros((n, p - 1), np.int32), completion_mask, np.zeros((n, 1), np.int32)], axis=1)
    return RescoringBatch(input_ids, attention_mask, positions, targets, target_mask, p)
