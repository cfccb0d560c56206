"""Products through the seam: the 2-D fast forms and every decode layout give the einsum's
result, and low-precision backward products give JAX's gradients up to bf16 rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_marks import needs

from ledex_jax import ops as O
from ledex_jax.ops.dense import lowp_einsum

XLA = O.Ops()
SHAPES = [
    ("bte,ef->btf", (None, 1, 32), (32, 24), 1),        # gate/up/down
    ("bte,ehd->bthd", (None, 1, 32), (32, 4, 8), 1),    # q/k/v
    ("bthd,hde->bte", (None, 1, 4, 8), (4, 8, 16), 2),  # o_proj
]
LAYOUTS = [pytest.param("xla", "float32", id="xla-f32"), pytest.param("xla", "bfloat16", id="xla-bf16"),
           pytest.param("f32", "float32", id="f32", marks=needs("f32_matmul")),
           pytest.param("amx", "bfloat16", id="amx", marks=needs("amx_matmul"))]


@pytest.mark.parametrize("kind,dtype", LAYOUTS)
@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("spec, x_shape, w_shape, contracted", SHAPES)
def test_decode_layout_same_product(kind, dtype, rows, spec, x_shape, w_shape, contracted):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(rows, *x_shape[1:])), dtype)
    w = jnp.asarray(rng.normal(size=w_shape), dtype)
    ref = O.matmul(XLA, spec, x, w)
    layout = O.decode_layout(O.Ops(decode_matmul=kind), w, contracted)
    assert layout.kind == kind
    got = O.matmul(XLA, spec, x, layout)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    tol = 1e-5 if dtype == "float32" else 2 ** -7
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), rtol=tol, atol=tol)


def test_decode_layout_rejects_mismatched_input():
    w = O.decode_layout(XLA, jnp.zeros((16, 24)), 1)
    with pytest.raises(ValueError, match="trailing input dims"):
        w.apply(jnp.zeros((2, 1, 8)))


def test_bf16_layout_pads_few_rows_on_cpu_only():
    w = jnp.zeros((16, 24), jnp.bfloat16)
    assert O.decode_layout(O.Ops(platform="cpu"), w, 1).min_rows == 4
    assert O.decode_layout(O.Ops(platform="gpu"), w, 1).min_rows == 1


@pytest.mark.parametrize("spec, x_shape, w_shape", [("bte,ehd->bthd", (2, 5, 16), (16, 3, 4)),
                                                    ("bthd,hde->bte", (2, 5, 3, 4), (3, 4, 16)),
                                                    ("bkgtd,bksd->bkgts", (2, 3, 2, 5, 8), (2, 3, 7, 8))])
def test_matmul_equals_einsum(spec, x_shape, w_shape):
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=x_shape).astype(np.float32), rng.normal(size=w_shape).astype(np.float32)
    np.testing.assert_allclose(O.matmul(XLA, spec, x, w), np.einsum(spec, x, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec,x_shape,w_shape", [("nk,kf->nf", (16, 64), (64, 96)),
                                                  ("bkgtd,bksd->bkgts", (2, 3, 2, 8, 32), (2, 3, 8, 32)),
                                                  ("bkgts,bksd->bkgtd", (2, 3, 2, 8, 8), (2, 3, 8, 32))])
@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_lowp_einsum_gradients(spec, x_shape, w_shape, platform):
    """Backward products on bf16 operands give JAX's gradients up to the bf16 rounding of the
    output's cotangent (the weight gradient in float32 operands on CPU, bf16 elsewhere)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal(w_shape), jnp.bfloat16)
    probe = jnp.asarray(rng.standard_normal(jnp.einsum(spec, x, w).shape), jnp.float32)
    ops = O.Ops(platform=platform)
    ours = jax.grad(lambda x, w: jnp.sum(lowp_einsum(spec, x, w, jnp.dtype(jnp.float32), ops) * probe), (0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x.astype(jnp.float32), w.astype(jnp.float32))
                                        * probe.astype(jnp.bfloat16).astype(jnp.float32)), (0, 1))(x, w)
    for a, b in zip(ours, ref):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kernels", [pytest.param("xla"), pytest.param("cpu", marks=needs("amx_matmul"))])
def test_bf16_matmul_and_gradients_per_implementation(kernels):
    """A bf16 training product ([B, T, E] x [E, H, D]) and its gradients on each implementation
    agree with float32 math on the bf16 inputs."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 10, 64)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((64, 4, 24)) * 0.1, jnp.bfloat16)
    probe = jnp.asarray(rng.standard_normal((2, 10, 4, 24)), jnp.bfloat16)
    ops = O.Ops(matmul=kernels)
    f = lambda x, w: jnp.sum(O.matmul(ops, "bte,ehd->bthd", x, w).astype(jnp.float32) * probe)
    ref = lambda x, w: jnp.sum(jnp.einsum("bte,ehd->bthd", x.astype(jnp.float32), w.astype(jnp.float32))
                               * probe.astype(jnp.float32))
    text = jax.jit(jax.grad(f, (0, 1))).lower(x, w).as_text()
    assert ("ledex_amx_matmul" in text) == (kernels == "cpu")
    for a, b in zip(jax.jit(jax.grad(f, (0, 1)))(x, w), jax.grad(ref, (0, 1))(x, w)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=3e-2, atol=3e-2)
