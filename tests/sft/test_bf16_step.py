"""bfloat16 compute with float32 weights: the step compiles and runs on every family and remat
policy (XLA:CPU rejects some bf16 product forms at run time), and its gradients track float32's."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ledex_jax.models import get_preset
from ledex_jax.ops import Ops
from ledex_jax.ops.dense import lowp_einsum
from ledex_jax.sharding import make_mesh
from tests.sft.test_train_step import one_step, synthetic_batch


def sgd_grads(cfg):
    """-grad of one step: SGD with learning rate 1 updates params by exactly the gradient."""
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    params, metrics = one_step(mesh, 1, synthetic_batch(), model_cfg=cfg, opt=optax.sgd(1.0))
    return params, metrics


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt_bigcode"])
@pytest.mark.parametrize("remat", ["none", "attention", "full"])
def test_bf16_step_tracks_float32(family, remat):
    base = get_preset(family, remat_policy=remat, hidden_size=128, intermediate_size=256)
    p32, m32 = sgd_grads(base)
    p16, m16 = sgd_grads(base.replace(dtype="bfloat16"))
    assert abs(float(m16["loss"]) - float(m32["loss"])) < 0.02 * float(m32["loss"])
    g32 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(p32)])
    g16 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(p16)])
    assert np.all(np.isfinite(g16))
    cosine = g16 @ g32 / (np.linalg.norm(g16) * np.linalg.norm(g32))
    assert cosine > 0.999, cosine


@pytest.mark.parametrize("spec,x_shape,w_shape", [("bte,ef->btf", (2, 8, 64), (64, 96)),
                                                  ("bkgtd,bksd->bkgts", (2, 3, 2, 8, 32), (2, 3, 8, 32)),
                                                  ("bkgts,bksd->bkgtd", (2, 3, 2, 8, 8), (2, 3, 8, 32))])
def test_lowp_einsum_gradients(spec, x_shape, w_shape):
    """Backward products on bf16 operands give JAX's gradients up to the bf16 rounding of the
    output's cotangent."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal(w_shape), jnp.bfloat16)
    probe = jnp.asarray(rng.standard_normal(jnp.einsum(spec, x, w).shape), jnp.float32)
    ours = jax.grad(lambda x, w: jnp.sum(lowp_einsum(spec, x, w, jnp.dtype(jnp.float32), Ops()) * probe), (0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x.astype(jnp.float32), w.astype(jnp.float32))
                                        * probe.astype(jnp.bfloat16).astype(jnp.float32)), (0, 1))(x, w)
    for a, b in zip(ours, ref):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2e-2, atol=2e-2)
