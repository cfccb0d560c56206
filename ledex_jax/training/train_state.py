"""Train state (params, optimizer state, step) and its shardings on a mesh."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ledex_jax.sharding import DEFAULT_RULES, logical_to_spec, param_shardings


class TrainState(NamedTuple):
    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array


def create_train_state(model: nnx.Module, optimizer: optax.GradientTransformation, mesh, rules=DEFAULT_RULES):
    """Splits the model and builds the optimizer state on the params' shardings.

    Returns (graphdef, state, state_shardings). Optimizer moments inherit each parameter's
    sharding (zeros_like under jit keeps it); scalars are replicated.
    """
    graphdef, params = nnx.split(model, nnx.Param)
    shardings = param_shardings(params, mesh, rules)
    params = jax.device_put(params, shardings)
    opt_state = jax.jit(optimizer.init)(params)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shardings = jax.tree.map(
        lambda x: x.sharding if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh else replicated,
        opt_state)
    state = TrainState(params, opt_state, jnp.zeros((), jnp.int32))
    state = jax.device_put(state, TrainState(shardings, opt_shardings, replicated))
    return graphdef, state, jax.tree.map(lambda x: x.sharding, state)


def batch_sharding(mesh, rules=DEFAULT_RULES, batch_size: int | None = None) -> NamedSharding:
    shape = None if batch_size is None else (batch_size, 1)
    return NamedSharding(mesh, logical_to_spec(("batch", "length"), rules, mesh, shape, "batch"))


def process_rows(sharding: NamedSharding, batch_size: int) -> np.ndarray:
    """Indices of the global batch rows held by this process's devices, in global order.

    Every host builds the same global batch (deterministic for a seed and step) and feeds only
    these rows, so an N-host run sees exactly the batches of a 1-host run.
    """
    rows = set()
    for index in sharding.addressable_devices_indices_map((batch_size, 1)).values():
        rows.update(range(batch_size)[index[0]])
    return np.array(sorted(rows), dtype=np.int64)
