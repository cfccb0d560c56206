"""Which implementation each op uses: one config key (`ModelConfig.kernels`), resolved once per
traced program by `select`.

| `kernels` | TPU                          | GPU                                   | CPU                                          |
|-----------|------------------------------|---------------------------------------|----------------------------------------------|
| `auto`    | attention: Pallas splash     | attention: cuDNN (bf16/fp16)          | each CPU kernel where this CPU runs it (below)|
| `xla`     | XLA everywhere               | XLA everywhere                        | XLA everywhere                               |
| `pallas`  | attention: Pallas            | attention: Pallas, interpret mode     | attention: Pallas, interpret mode (tests)    |
| `cudnn`   | error                        | attention: cuDNN                      | error                                        |
| `cpu`     | error                        | error                                 | as `auto`                                    |

CPU kernels (`ledex_jax/kernels`, gated per kernel on the instructions it executes): bf16
training products, training/prefill attention and the LM-head loss on AMX; bf16/f32 decode
attention on AVX-512 (bf16); f32 decode products on AVX-512. They have no sharding rule, so a
program traced under a multi-device mesh keeps XLA's ops. Everything not listed runs on XLA.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax

KERNEL_CHOICES = ("auto", "xla", "pallas", "cudnn", "cpu")


@dataclasses.dataclass(frozen=True)
class Ops:
    """The implementation of each op (hashable: it is a static argument of traced functions).

    attention: training, scoring and prefill attention — "xla", "cudnn", "pallas" or "cpu".
    cache_attention: one new token over the KV cache — "xla" or "cpu".
    matmul: products with a weight and their gradients — "xla" or "cpu" (bf16 on AMX).
    lm_head: target log-probs from hidden states — "xla" or "cpu" (no [N, V] logits).
    decode_matmul: layout of decode weights (`ops.dense.decode_layout`) — "xla", "amx" or "f32".
    """
    platform: str = "cpu"
    attention: str = "xla"
    cache_attention: str = "xla"
    matmul: str = "xla"
    lm_head: str = "xla"
    decode_matmul: str = "xla"
    interpret: bool = False  # Pallas off TPU: the interpreter (tests)


def _active_mesh_devices() -> int:
    from ledex_jax.sharding import active_mesh

    active = active_mesh()
    return 1 if active is None else active[0].size


def _cpu_kernel_available(name: str) -> bool:
    from ledex_jax.kernels import build

    return build.available(name)


def select(kernels: str = "auto", dtype: str = "float32", *, platform: str | None = None,
           mesh_devices: int | None = None, cpu_kernel_available: Callable[[str], bool] | None = None) -> Ops:
    """The `Ops` for `kernels` (one of KERNEL_CHOICES) and a compute dtype, on `platform`
    (default: JAX's backend) under a mesh of `mesh_devices` (default: the active mesh).
    `cpu_kernel_available(name)` defaults to `kernels.build.available`; tests fake the platform
    and the CPU here."""
    if kernels not in KERNEL_CHOICES:
        raise ValueError(f"kernels={kernels!r}; choose one of {KERNEL_CHOICES} (see ledex_jax/ops/choice.py)")
    platform = platform or jax.default_backend()
    if kernels == "xla":
        return Ops(platform)
    if kernels == "pallas":
        return Ops(platform, attention="pallas", interpret=platform != "tpu")
    if kernels == "cudnn" and platform != "gpu":
        raise ValueError(f"kernels='cudnn' needs a GPU backend, this one is {platform!r}; use kernels='auto'")
    if kernels == "cpu" and platform != "cpu":
        raise ValueError(f"kernels='cpu' needs the CPU backend, this one is {platform!r}; use kernels='auto'")
    if platform == "tpu":
        return Ops(platform, attention="pallas")
    if platform == "gpu":
        return Ops(platform, attention="cudnn" if dtype in ("bfloat16", "float16") or kernels == "cudnn" else "xla")
    if platform != "cpu":
        return Ops(platform)
    mesh_devices = _active_mesh_devices() if mesh_devices is None else mesh_devices
    has = cpu_kernel_available or _cpu_kernel_available
    if mesh_devices > 1:  # the custom calls have no sharding rule
        return Ops(platform)
    bf16 = dtype == "bfloat16"
    amx = bf16 and has("amx_matmul")
    return Ops(
        platform,
        attention="cpu" if bf16 and has("flash_attention") else "xla",
        cache_attention="cpu" if dtype in ("bfloat16", "float32") and has("decode_attention") else "xla",
        matmul="cpu" if amx else "xla",
        lm_head="cpu" if bf16 and has("lm_head_loss") else "xla",
        decode_matmul="amx" if amx else "f32" if dtype == "float32" and has("f32_matmul") else "xla")
