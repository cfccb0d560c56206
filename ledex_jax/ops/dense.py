"""Products with a weight: `matmul(ops, spec, x, w)` for training and scoring, and the decode
layouts the sampler prepares once (`decode_layout`), which `matmul` accepts in place of `w`.

Every product accumulates in float32 and returns x's dtype (what TPUs/GPUs do for bf16). A
product that contracts x's trailing axes with w's leading ones ("bte,ehd->bthd", o_proj's
"bthd,hde->bte") runs as one 2-D product [rows, in] x [in, out]: no transposes of activations
or weights in the forward or backward pass. Low-precision backward products take low-precision
operands (`lowp_einsum`), as mixed-precision training does.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ledex_jax.kernels import amx, f32
from ledex_jax.ops.choice import Ops


def matmul(ops: Ops, spec: str, x, w, out_dtype=None):
    """einsum(spec, x, w) accumulated in float32, in out_dtype (default x's). `w` may be a decode
    layout (`decode_layout`)."""
    out_dtype = out_dtype or x.dtype
    if isinstance(w, DecodeLayout):
        return w.apply(x, out_dtype)
    flat = _as_matrix_product(spec, x, w)
    if flat is None:
        return einsum(ops, spec, x, w, out_dtype)
    x2, w2, out_shape = flat
    if x2.dtype == jnp.float32:
        y = jnp.dot(x2, w2, preferred_element_type=jnp.float32)
    elif ops.matmul == "cpu" and x2.dtype == w2.dtype == jnp.bfloat16:
        y = amx.dense(x2, w2, jnp.dtype(out_dtype))
    else:
        y = lowp_einsum("nk,kf->nf", x2, w2, jnp.dtype(out_dtype), ops)
    return y.astype(out_dtype).reshape(out_shape)


def einsum(ops: Ops, spec: str, x, w, out_dtype):
    """Any two-operand einsum accumulated in float32 (attention's batched products)."""
    if x.dtype == jnp.float32:
        return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32).astype(out_dtype)
    return lowp_einsum(spec, x, w, jnp.dtype(out_dtype), ops)


def _operands(spec: str) -> tuple[str, str, str]:
    """"ab,bc->ac" -> ("ab", "bc", "ac")."""
    inputs, out = spec.split("->")
    a, b = inputs.split(",")
    return a, b, out


def _as_matrix_product(spec: str, x, w):
    """(x2 [rows, in], w2 [in, out], out shape) when spec contracts x's trailing axes with w's
    leading ones and keeps the rest in order; else None."""
    xs, ws, out = _operands(spec)
    n = len(ws) - len(ws.lstrip(xs))  # w's leading axes that x also has
    contracted = ws[:n]
    if not contracted or not xs.endswith(contracted) or out != xs[:len(xs) - n] + ws[n:]:
        return None
    lead, rest = x.shape[:x.ndim - n], w.shape[n:]
    return x.reshape(math.prod(lead), -1), w.reshape(-1, math.prod(rest)), (*lead, *rest)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def lowp_einsum(spec: str, x, w, out_dtype, ops: Ops):
    """einsum of low-precision operands accumulated in float32, in out_dtype, whose backward
    products also take low-precision operands: the output's cotangent is cast to x's dtype first
    (exact for a bf16 output; for float32 logits/scores it rounds the cotangent to bf16, as
    mixed-precision training does). JAX's own transpose would multiply the float32 cotangent
    with the bf16 operand, a float32 product."""
    return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32).astype(out_dtype)


def _lowp_einsum_fwd(spec, x, w, out_dtype, ops):
    return lowp_einsum(spec, x, w, out_dtype, ops), (x, w)


def _lowp_einsum_bwd(spec, out_dtype, ops, residuals, ct):
    x, w = residuals
    xs, ws, out = _operands(spec)
    ct = ct.astype(x.dtype)
    dx = jnp.einsum(f"{out},{ws}->{xs}", ct, w, preferred_element_type=jnp.float32).astype(x.dtype)
    if spec == "nk,kf->nf":
        dw = _weight_grad(ops, x, ct)
    else:
        dw = jnp.einsum(f"{xs},{out}->{ws}", x, ct, preferred_element_type=jnp.float32)
    return dx, dw.astype(w.dtype)


lowp_einsum.defvjp(_lowp_einsum_fwd, _lowp_einsum_bwd)


def _weight_grad(ops: Ops, a, b):
    """a^T b for [tokens, in] x [tokens, out], float32. XLA:CPU runs bf16 operands in this form
    far below its other forms (and can reject it inside a train step): on CPU it takes the AMX
    kernel or float32 operands."""
    if ops.matmul == "cpu":
        return amx.weight_grad(a, b)
    if ops.platform == "cpu":
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return jnp.einsum("nk,nf->kf", a, b, preferred_element_type=jnp.float32)


# --- decode layouts ------------------------------------------------------------------------------

def _apply_flat(x, ins, outs, product_2d, what: str):
    """x [..., *ins] -> [..., *outs] through product_2d([rows, prod(ins)]) -> [rows, prod(outs)]."""
    ins, c = tuple(ins), len(ins)
    if tuple(x.shape[x.ndim - c:]) != ins:
        raise ValueError(f"{what} expects trailing input dims {ins}, got {x.shape}")
    lead = x.shape[:x.ndim - c]
    return product_2d(x.reshape(-1, math.prod(ins))).reshape(*lead, *outs)


@jax.tree_util.register_pytree_node_class
class DecodeLayout:
    """A weight [in..., out...] re-laid out once for decoding, applied as `matmul` would.

    kind "xla": stored output-first ([out, in], PyTorch's Linear layout), the operand order
    XLA:CPU multiplies fastest with few rows; bf16 products with fewer than `min_rows` rows are
    zero-padded to stay on its fast path. kind "amx" / "f32": packed for the CPU kernels.
    """

    def __init__(self, array, ins: tuple[int, ...], outs: tuple[int, ...], kind: str, min_rows: int = 1):
        self.array, self.ins, self.outs, self.kind, self.min_rows = array, tuple(ins), tuple(outs), kind, min_rows

    def apply(self, x, out_dtype=None):
        """x [..., in...] -> [..., out...] in out_dtype (default x's), float32 accumulation."""
        out_dtype = out_dtype or x.dtype
        return _apply_flat(x, self.ins, self.outs, lambda x2: self._product(x2, out_dtype), f"{self.kind} decode weight")

    def _product(self, x2, out_dtype):
        n = math.prod(self.outs)
        if self.kind == "amx":
            return amx.matmul(x2, self.array, n, jnp.dtype(out_dtype))
        if self.kind == "f32":
            return f32.matmul(x2, self.array, n).astype(out_dtype)
        rows = x2.shape[0]
        if rows < self.min_rows:
            x2 = jnp.pad(x2, ((0, self.min_rows - rows), (0, 0)))
        y = jax.lax.dot_general(x2, self.array, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        return y[:rows].astype(out_dtype)

    def tree_flatten(self):
        return (self.array,), (self.ins, self.outs, self.kind, self.min_rows)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)


def decode_layout(ops: Ops, w, contracted: int) -> DecodeLayout:
    """w [in..., out...] (`contracted` leading input axes, compute dtype) in the layout of
    `ops.decode_matmul`; an AMX weight whose input size the kernel cannot take stays "xla"."""
    ins, outs = w.shape[:contracted], w.shape[contracted:]
    w2 = w.reshape(math.prod(ins), math.prod(outs))
    if ops.decode_matmul == "amx" and amx.packable(w2.shape[0]):
        return DecodeLayout(amx.pack(w2), ins, outs, "amx")
    if ops.decode_matmul == "f32":
        return DecodeLayout(f32.pack(w2), ins, outs, "f32")
    min_rows = 4 if w.dtype == jnp.bfloat16 and ops.platform == "cpu" else 1
    return DecodeLayout(w2.T, ins, outs, "xla", min_rows)
