"""Parameters that carry their logical axis names (`axes` metadata), for the sharding rules."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def param(rngs: nnx.Rngs | None, shape: Sequence[int], axes: Sequence[str], dtype, init: str = "normal",
          std: float = 0.02) -> nnx.Param:
    """A parameter carrying its logical axis names in metadata (`axes`)."""
    if len(shape) != len(axes):
        raise ValueError(f"shape {shape} and axes {axes} differ in rank")
    if init == "normal":
        value = std * jax.random.normal(rngs.params(), tuple(shape), jnp.float32)
    elif init == "ones":
        value = jnp.ones(tuple(shape), jnp.float32)
    elif init == "zeros":
        value = jnp.zeros(tuple(shape), jnp.float32)
    else:
        raise ValueError(f"unknown init {init!r}")
    return nnx.Param(value.astype(dtype), axes=tuple(axes))


def values(module_params: dict[str, nnx.Param], dtype=None) -> dict[str, jax.Array]:
    """Raw arrays of a dict of Params, cast to `dtype` (None: as stored)."""
    return {name: p[...] if dtype is None else p[...].astype(dtype) for name, p in module_params.items()}
