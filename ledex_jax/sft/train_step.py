"""The compiled SFT step: answer-only cross-entropy with exact gradient accumulation.

The loss is (sum of token losses, number of answer tokens) per micro-batch; gradients of the sums
are accumulated and divided once by the total count, so accumulation over k micro-batches gives
the same update as one big batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ledex_jax.training.losses import masked_nll
from ledex_jax.training.train_state import TrainState

BATCH_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


def batch_loss(graphdef, params, batch):
    """(loss sum, answer-token count) of one micro-batch; segment ids keep packed examples apart."""
    model = nnx.merge(graphdef, params)
    log_probs = model.target_log_probs(batch["inputs"], batch["targets"], batch["segment_ids"] > 0,
                                       positions=batch["positions"], segment_ids=batch["segment_ids"])
    return masked_nll(log_probs, batch["loss_mask"])


def split_microbatches(batch, num_micro: int):
    """[B, ...] -> [num_micro, B / num_micro, ...], micro-batch i = rows i, i+k, i+2k, ...

    Strided rows keep every micro-batch spread over all data-parallel devices.
    """
    def split(x):
        x = x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)
    return jax.tree.map(split, batch)


def make_train_step(graphdef, optimizer: optax.GradientTransformation, grad_accum_steps: int):
    def train_step(state: TrainState, batch):
        grad_fn = jax.value_and_grad(lambda p, mb: batch_loss(graphdef, p, mb), has_aux=True)

        def accumulate(carry, mb):
            grads_sum, loss_sum, count = carry
            (loss, n), grads = grad_fn(state.params, mb)
            # Materialise the gradients here: XLA:CPU fused the per-layer gradients of a model
            # unrolled by a Python loop into the optimizer's update as a 30-way concatenation
            # evaluated per element (1.6 s per stacked SmolLM2 weight); `scan_layers=False` now
            # unrolls the scan instead (gradients written in place), this keeps other layouts safe.
            grads = jax.lax.optimization_barrier(grads)
            return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss, count + n), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        (grads, loss_sum, count), _ = jax.lax.scan(accumulate, init, split_microbatches(batch, grad_accum_steps))
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss_sum / denom, "answer_tokens": count, "grad_norm": optax.global_norm(grads),
                   "tokens": jnp.sum(batch["segment_ids"] > 0).astype(jnp.float32)}
        return TrainState(params, opt_state, state.step + 1), metrics

    return train_step


def make_eval_step(graphdef):
    def eval_step(params, batch):
        loss_sum, count = batch_loss(graphdef, params, batch)
        return {"loss_sum": loss_sum, "count": count}
    return eval_step
