"""The SFT loss: answer-only cross-entropy as (sum of token losses, number of answer tokens) per
micro-batch, stepped by the shared accumulating step (`ledex_jax/training/train_step.py`)."""
from __future__ import annotations

import jax.numpy as jnp
import optax
from flax import nnx

from ledex_jax.training import train_step as shared_step
from ledex_jax.training.losses import masked_nll

BATCH_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


def batch_loss(graphdef, params, batch):
    """(loss sum, answer-token count) of one micro-batch; segment ids keep packed examples apart."""
    model = nnx.merge(graphdef, params)
    log_probs = model.target_log_probs(batch["inputs"], batch["targets"], batch["segment_ids"] > 0,
                                       positions=batch["positions"], segment_ids=batch["segment_ids"])
    return masked_nll(log_probs, batch["loss_mask"])


def make_train_step(graphdef, optimizer: optax.GradientTransformation, grad_accum_steps: int):
    def loss_fn(params, batch):
        loss, count = batch_loss(graphdef, params, batch)
        return loss, {"count": count, "tokens": jnp.sum(batch["segment_ids"] > 0).astype(jnp.float32)}

    step = shared_step.make_train_step(loss_fn, optimizer, grad_accum_steps)

    def train_step(state, batch):
        state, totals = step(state, batch)
        denom = jnp.maximum(totals["count"], 1.0)
        return state, {"loss": totals["loss_sum"] / denom, "answer_tokens": totals["count"],
                       "grad_norm": totals["grad_norm"], "tokens": totals["tokens"]}

    return train_step


def make_eval_step(graphdef):
    def eval_step(params, batch):
        loss_sum, count = batch_loss(graphdef, params, batch)
        return {"loss_sum": loss_sum, "count": count}
    return eval_step
