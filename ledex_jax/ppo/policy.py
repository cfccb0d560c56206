"""The PPO policy: the language model plus a linear value head on its final hidden state.

One forward of the shared backbone gives both the log-probabilities of the response tokens and
the value of every state before them. The value head is a separate module so checkpoints keep it
(`value_head` item) while the Hugging Face export writes the language model alone.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ledex_jax import ops as O
from ledex_jax.models.params import param
from ledex_jax.ppo.losses import entropy_from_logits

VALUE_HEAD_STD = 1e-3  # small weights: initial values near 0, so early advantages are the rewards


class ValueHead(nnx.Module):
    """v = h · w + b in float32, w ~ N(0, VALUE_HEAD_STD), b = 0 (TRL's head without its dropout)."""

    def __init__(self, hidden_size: int, *, rngs: nnx.Rngs, std: float = VALUE_HEAD_STD):
        self.kernel = param(rngs, (hidden_size,), ("value_embed",), jnp.float32, std=std)
        self.bias = param(rngs, (), (), jnp.float32, "zeros")

    def __call__(self, hidden):
        return hidden.astype(jnp.float32) @ self.kernel[...] + self.bias[...]


class PolicyWithValue(nnx.Module):
    def __init__(self, lm, value_head: ValueHead):
        self.lm = lm
        self.value_head = value_head


def with_value_head(lm, seed: int, std: float = VALUE_HEAD_STD) -> PolicyWithValue:
    return PolicyWithValue(lm, ValueHead(lm.config.hidden_size, rngs=nnx.Rngs(params=seed + 1), std=std))


def response_hidden(lm, input_ids, attention_mask, positions, response_len: int):
    """Final hidden states at the positions that predict the last `response_len` tokens
    ([prompt | response] rows, `sampling.layout.RescoringBatch`), and those tokens."""
    hidden = lm.forward(input_ids, attention_mask, positions=positions, logits=False).hidden
    p = input_ids.shape[1] - response_len
    return hidden[:, p - 1:p - 1 + response_len], input_ids[:, p:]


def head(lm):
    return lm.unembedding().astype(lm.config.jnp_dtype)


def response_log_probs(lm, hidden, tokens):
    """log p(tokens) [B, M] float32 without materialising logits where the kernels allow."""
    return O.target_log_probs(lm.ops(), hidden, head(lm), tokens)


def response_logits(lm, hidden):
    return lm.logits(hidden)


def policy_outputs(policy: PolicyWithValue, batch, response_len: int, entropy: bool = False):
    """(log-probs [B, M], values [B, M], entropy [B, M] or None) of the response tokens."""
    hidden, tokens = response_hidden(policy.lm, batch["input_ids"], batch["attention_mask"], batch["positions"],
                                     response_len)
    values = policy.value_head(hidden)
    if entropy:
        logits = response_logits(policy.lm, hidden)
        return O.token_log_probs(logits, tokens), values, entropy_from_logits(logits)
    return response_log_probs(policy.lm, hidden, tokens), values, None


def reference_outputs(lm, batch, response_len: int, logits: bool = False):
    """The frozen reference's log-probs [B, M] (and logits [B, M, V] for the full KL)."""
    hidden, tokens = response_hidden(lm, batch["input_ids"], batch["attention_mask"], batch["positions"],
                                     response_len)
    if logits:
        out = response_logits(lm, hidden)
        return O.token_log_probs(out, tokens), out
    return response_log_probs(lm, hidden, tokens), None
