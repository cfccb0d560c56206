"""Running a family's layer body over all layers: a scan over stacked weights (compile time
independent of depth), or a Python loop over per-layer weights (the sampler's decode layouts).
Rematerialisation policies apply per layer."""
from __future__ import annotations

from typing import Callable

import jax

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def run_layers(block: Callable, h, layer_params, kv, remat_policy: str, dtype=None, scan: bool = True):
    """Runs `block(h, params_i, kv_i) -> (h, kv_i)` over the layers; returns (h, kv).

    layer_params: a dict of stacked [L, ...] arrays (scanned), or a tuple of per-layer dicts
    (looped). kv: None, stacked (k [L, ...], v [L, ...]), or per-layer tuples (k_i..., v_i...)
    matching layer_params. scan=False unrolls the scan (`ModelConfig.scan_layers`). Stacked
    weights are cast to `dtype` one layer at a time inside the loop, so their gradients stack
    in the stored dtype. remat_policy "attention" is handled by the attention op itself.
    """
    if isinstance(layer_params, tuple):
        new_k, new_v = [], []
        for i, params_i in enumerate(layer_params):
            h, kv_i = block(h, params_i, None if kv is None else (kv[0][i], kv[1][i]))
            if kv_i is not None:
                new_k.append(kv_i[0])
                new_v.append(kv_i[1])
        return h, None if kv is None else (tuple(new_k), tuple(new_v))

    body = block
    if remat_policy in REMAT_POLICIES:
        body = jax.checkpoint(block, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)

    def step(carry, xs):
        params_i, kv_i = xs
        if dtype is not None:
            params_i = {name: x.astype(dtype) for name, x in params_i.items()}
        return body(carry, params_i, kv_i)

    # Unrolled as a fully unrolled scan rather than a loop over slices: each layer's weight
    # gradient is then written into the stacked gradient in place.
    return jax.lax.scan(step, h, (layer_params, kv), unroll=not scan)
