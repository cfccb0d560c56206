"""Logits and the log-probabilities a loss or a sampler needs, through the seam."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ledex_jax.kernels import lm_head_loss
from ledex_jax.ops import dense
from ledex_jax.ops.choice import Ops


def token_log_probs(logits, targets):
    """log softmax(logits)[target], float32: logits [..., V], targets [...] int."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def logits(ops: Ops, hidden, head):
    """float32 logits [..., V] from hidden states [..., E] and the head [E, V] (or its decode layout)."""
    lead = hidden.shape[:-1]
    h2 = hidden.reshape(-1, hidden.shape[-1])
    return dense.matmul(ops, "ne,ev->nv", h2, head, jnp.float32).reshape(*lead, -1)


def target_log_probs(ops: Ops, hidden, head, targets):
    """log p(targets) [B, T] float32 from hidden states [B, T, E] and the head [E, V]. The CPU
    kernel never stores the [B, T, V] float32 logits."""
    if ops.lm_head == "cpu" and lm_head_loss.applies(hidden, head):
        b, t, e = hidden.shape
        return -lm_head_loss.token_nll(hidden.reshape(b * t, e), head, targets.reshape(-1)).reshape(b, t)
    return token_log_probs(logits(ops, hidden, head), targets)
