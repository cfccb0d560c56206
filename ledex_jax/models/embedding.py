"""Token and position embedding lookups."""
from __future__ import annotations

import jax.numpy as jnp

from ledex_jax.sharding import constrain


def embedding_lookup(table, ids, dtype, rows_axis="vocab"):
    """Rows of `table` [rows_axis, embed] for `ids`. The table is first gathered over its `embed`
    (fsdp) shards, as FSDP does for every weight: from an embed-sharded table the partitioner can
    only make batch-sharded activations by replicating them whole."""
    return jnp.take(constrain(table.astype(dtype), (rows_axis, None)), ids, axis=0)
