"""The compiled optimizer step every trainer shares: exact gradient accumulation over micro-batches
for any loss written as a (sum, denominator) pair.

A trainer supplies `loss_fn(params, micro_batch) -> (loss_sum, sums)`, where `sums` is a dict of
per-micro-batch totals that includes `count` (the loss's denominator: answer tokens for SFT,
response tokens for PPO). Gradients of the sums are accumulated and divided once by the total
count, so k micro-batches give the same update as one big batch. The step returns the totals, so
each trainer derives its own metrics (loss = loss_sum / count, clip fractions, ...).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from ledex_jax.training.train_state import TrainState


def split_microbatches(batch, num_micro: int):
    """[B, ...] -> [num_micro, B / num_micro, ...], micro-batch i = rows i, i+k, i+2k, ...

    Strided rows keep every micro-batch spread over all data-parallel devices.
    """
    def split(x):
        x = x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)
    return jax.tree.map(split, batch)


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, grad_accum_steps: int,
                    skip_update: Callable | None = None):
    """Returns train_step(state, batch) -> (state, totals) with totals = {loss_sum, grad_norm, **sums}.

    skip_update(totals) -> bool scalar: when True the gradients are zeroed before the optimizer
    (PPO's ratio threshold: a minibatch whose policy moved too far contributes nothing)."""
    def train_step(state: TrainState, batch):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def accumulate(carry, mb):
            grads_sum, totals = carry
            (loss, sums), grads = grad_fn(state.params, mb)
            # Materialise the gradients here: XLA:CPU fused the per-layer gradients of a model
            # unrolled by a Python loop into the optimizer's update as a 30-way concatenation
            # evaluated per element (1.6 s per stacked SmolLM2 weight); `scan_layers=False` now
            # unrolls the scan instead (gradients written in place), this keeps other layouts safe.
            grads = jax.lax.optimization_barrier(grads)
            totals = jax.tree.map(jnp.add, totals, {"loss_sum": loss, **sums})
            return (jax.tree.map(jnp.add, grads_sum, grads), totals), None

        micro = split_microbatches(batch, grad_accum_steps)
        first = jax.tree.map(lambda x: x[0], micro)
        _, sums_shape = jax.eval_shape(loss_fn, state.params, first)
        zero_totals = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32),
                                   {"loss_sum": jax.ShapeDtypeStruct((), jnp.float32), **sums_shape})
        init = (jax.tree.map(jnp.zeros_like, state.params), zero_totals)
        (grads, totals), _ = jax.lax.scan(accumulate, init, micro)
        denom = jnp.maximum(totals["count"], 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        if skip_update is not None:
            keep = jnp.logical_not(skip_update(totals))
            grads = jax.tree.map(lambda g: jnp.where(keep, g, jnp.zeros_like(g)), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), {**totals, "grad_norm": optax.global_norm(grads)}

    return train_step
