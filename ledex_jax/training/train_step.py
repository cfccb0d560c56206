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


class Accumulation:
    """The pieces of an optimizer step over micro-batches, for a caller that loops over them on
    the host (micro-batches of different shapes, each shape its own program):
    grads, totals = start(params, mb); grads, totals = add(params, mb, grads, totals) for the
    rest; state, totals = apply(state, grads, totals). `make_train_step` is the same in one program.

    skip_update(totals) -> bool scalar: when True the gradients are zeroed before the optimizer
    (PPO's ratio threshold: a minibatch whose policy moved too far contributes nothing)."""

    def __init__(self, loss_fn: Callable, optimizer: optax.GradientTransformation,
                 skip_update: Callable | None = None):
        self.loss_fn, self.optimizer, self.skip_update = loss_fn, optimizer, skip_update
        self._grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def start(self, params, mb):
        (loss, sums), grads = self._grad_fn(params, mb)
        # Materialise the gradients here: XLA:CPU fused the per-layer gradients of a model
        # unrolled by a Python loop into the optimizer's update as a 30-way concatenation
        # evaluated per element (1.6 s per stacked SmolLM2 weight); `scan_layers=False` now
        # unrolls the scan instead (gradients written in place), this keeps other layouts safe.
        grads = jax.lax.optimization_barrier(grads)
        return grads, {"loss_sum": loss, **{k: jnp.asarray(v, jnp.float32) for k, v in sums.items()}}

    def add(self, params, mb, grads_sum, totals):
        grads, sums = self.start(params, mb)
        return jax.tree.map(jnp.add, grads_sum, grads), jax.tree.map(jnp.add, totals, sums)

    def zeros(self, params, mb):
        """Zero gradients and totals shaped as `start(params, mb)` returns them."""
        grads, sums = jax.eval_shape(self.start, params, mb)
        zero = lambda s: jnp.zeros(s.shape, s.dtype)
        return jax.tree.map(zero, grads), jax.tree.map(zero, sums)

    def apply(self, state: TrainState, grads, totals):
        denom = jnp.maximum(totals["count"], 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        if self.skip_update is not None:
            keep = jnp.logical_not(self.skip_update(totals))
            grads = jax.tree.map(lambda g: jnp.where(keep, g, jnp.zeros_like(g)), grads)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), {**totals, "grad_norm": optax.global_norm(grads)}


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, grad_accum_steps: int,
                    skip_update: Callable | None = None):
    """Returns train_step(state, batch) -> (state, totals) with totals = {loss_sum, grad_norm, **sums}:
    the batch split into `grad_accum_steps` micro-batches, accumulated by a `lax.scan`.
    skip_update: as in `Accumulation`."""
    acc = Accumulation(loss_fn, optimizer, skip_update)

    def train_step(state: TrainState, batch):
        micro = split_microbatches(batch, grad_accum_steps)
        init = acc.zeros(state.params, jax.tree.map(lambda x: x[0], micro))
        carry, _ = jax.lax.scan(lambda c, mb: (acc.add(state.params, mb, *c), None), init, micro)
        return acc.apply(state, *carry)

    return train_step
