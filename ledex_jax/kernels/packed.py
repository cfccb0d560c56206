"""A projection weight packed once for a CPU kernel (`amx` for bfloat16, `f32` for float32), with
the call semantics of `layers.matmul` on the unpacked weight; what the sampler's CPU decode path
stores for each projection and the LM head (`sampling/loop.py:split_layers`)."""
from __future__ import annotations

import math

import jax

from ledex_jax.kernels import amx, f32

KINDS = {"amx": amx, "f32": f32}


def apply_flat(x, ins, outs, product_2d, what: str):
    """x [..., *ins] -> [..., *outs] through product_2d([rows, prod(ins)]) -> [rows, prod(outs)]:
    how every decode-layout weight (`layers.Transposed`, `PackedWeight`) is applied."""
    ins, c = tuple(ins), len(ins)
    if tuple(x.shape[x.ndim - c:]) != ins:
        raise ValueError(f"{what} expects trailing input dims {ins}, got {x.shape}")
    lead = x.shape[:x.ndim - c]
    return product_2d(x.reshape(-1, math.prod(ins))).reshape(*lead, *outs)


@jax.tree_util.register_pytree_node_class
class PackedWeight:
    def __init__(self, packed, ins: tuple[int, ...], outs: tuple[int, ...], kind: str):
        self.packed, self.ins, self.outs, self.kind = packed, tuple(ins), tuple(outs), kind

    @classmethod
    def of(cls, w, contracted: int, kind: str) -> "PackedWeight":
        """w: [in..., out...] with `contracted` leading input axes; kind: "amx" or "f32"."""
        ins, outs = w.shape[:contracted], w.shape[contracted:]
        return cls(KINDS[kind].pack(w.reshape(math.prod(ins), math.prod(outs))), ins, outs, kind)

    def apply(self, x):
        """x [..., in...] -> [..., out...] in x's dtype (float32 accumulation)."""
        n = math.prod(self.outs)
        return apply_flat(x, self.ins, self.outs,
                          lambda x2: KINDS[self.kind].matmul(x2, self.packed, n, x.dtype), "PackedWeight")

    def product(self, x2):
        """[M, in] -> float32 [M, out] (e.g. logits)."""
        return KINDS[self.kind].matmul(x2, self.packed, math.prod(self.outs))

    def tree_flatten(self):
        return (self.packed,), (self.ins, self.outs, self.kind)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)
