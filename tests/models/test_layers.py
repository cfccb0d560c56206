"""Layer helpers whose fast paths must not change results."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ledex_jax.models import layers as L


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("spec, x_shape, w_shape, contracted", [
    ("bte,ef->btf", (None, 1, 16), (16, 24), 1),        # gate/up/down
    ("bte,ehd->bthd", (None, 1, 16), (16, 4, 8), 1),    # q/k/v
    ("bthd,hde->bte", (None, 1, 4, 8), (4, 8, 16), 2),  # o_proj
])
def test_transposed_weight_same_product(dtype, rows, spec, x_shape, w_shape, contracted):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(rows, *x_shape[1:])), dtype)
    w = jnp.asarray(rng.normal(size=w_shape), dtype)
    ref = L.matmul(spec, x, w)
    got = L.matmul(spec, x, L.Transposed.of(w, contracted, min_rows=4))
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), rtol=1e-5, atol=1e-5)


def test_transposed_weight_rejects_mismatched_input():
    w = L.Transposed.of(jnp.zeros((16, 24)), 1)
    with pytest.raises(ValueError, match="trailing input dims"):
        w.apply(jnp.zeros((2, 1, 8)))


def test_flattened_matmul_equals_einsum():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 5, 16)).astype(np.float32), rng.normal(size=(16, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(L.matmul("bte,ehd->bthd", x, w), np.einsum("bte,ehd->bthd", x, w), rtol=1e-5, atol=1e-5)


def test_attention_heads_first_matches_reference():
    """GQA over [B, Hkv, S, D] keys/values equals a plain per-head softmax attention."""
    rng = np.random.default_rng(2)
    b, t, h, hkv, d = 2, 5, 4, 2, 8
    q = rng.normal(size=(b, t, h, d)).astype(np.float32)
    k = rng.normal(size=(b, t, hkv, d)).astype(np.float32)
    v = rng.normal(size=(b, t, hkv, d)).astype(np.float32)
    visible = L.attention_mask_bias(t, jnp.ones((b, t), jnp.int32))
    got = L.dot_attention(q, L.heads_first(k), L.heads_first(v), visible, d ** -0.5)
    kr, vr = np.repeat(k, h // hkv, axis=2), np.repeat(v, h // hkv, axis=2)
    scores = np.einsum("bthd,bshd->bhts", q, kr) * d ** -0.5
    scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, np.einsum("bhts,bshd->bthd", probs, vr), rtol=1e-5, atol=1e-5)


def test_fused_attention_plumbing_matches_dot_attention():
    """The GPU path's masks and layouts (run here with JAX's XLA implementation of the same call):
    packed segments and left padding, GQA; equal on every real query."""
    rng = np.random.default_rng(3)
    b, t, h, hkv, d = 2, 8, 4, 2, 8
    q, k, v = (rng.normal(size=(b, t, n, d)).astype(np.float32) for n in (h, hkv, hkv))
    attention = np.ones((b, t), np.int32)
    attention[1, :3] = 0  # left padding
    segments = np.array([[1, 1, 1, 2, 2, 2, 2, 2], [0, 0, 0, 1, 1, 1, 1, 1]], np.int32)
    visible = L.attention_mask_bias(t, jnp.asarray(attention), jnp.asarray(segments))
    ref = L.dot_attention(q, L.heads_first(k), L.heads_first(v), visible, d ** -0.5)
    got = L.fused_attention(q, k, v, visible, d ** -0.5, implementation="xla")
    real = attention.astype(bool)
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(ref)[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("theta,head_dim,factor,max_positions", [(10000.0, 64, None, 4096), (1e6, 128, None, 16384),
                                                                  (10000.0, 32, 2.0, 512)])
def test_rope_tables_match_transformers_rotary_embedding(theta, head_dim, factor, max_positions):
    """The precomputed tables give HF's cos/sin (to 1 float32 ulp) at every position, including the
    last one; a position past the table reads NaN rather than a wrong angle."""
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope = {"rope_type": "linear", "factor": factor} if factor else {"rope_type": "default"}
    cfg = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, max_position_embeddings=max_positions,
                      rope_theta=theta, rope_scaling=rope)
    positions = np.stack([np.arange(0, max_positions, 3), np.arange(max_positions - 1, -1, -3)])
    x = torch.zeros((2, positions.shape[1], head_dim))
    cos_ref, sin_ref = LlamaRotaryEmbedding(cfg)(x, torch.from_numpy(positions))
    cos, sin = L.rope_tables(jnp.asarray(positions), head_dim, theta, factor, max_positions)
    np.testing.assert_allclose(np.asarray(cos), cos_ref.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sin), sin_ref.numpy(), rtol=0, atol=1e-6)
    past, _ = L.rope_tables(jnp.asarray([[max_positions]]), head_dim, theta, factor, max_positions)
    assert np.isnan(np.asarray(past)).all()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rope_gradient_is_the_inverse_rotation(dtype):
    """`apply_rope`'s custom gradient equals autodiff of the rotate-half formula (computed in
    float32; in bf16 ours rounds once, where autodiff of the bf16 formula rounds three times)."""
    rng = np.random.default_rng(0)
    cos, sin = L.rope_tables(jnp.asarray(rng.integers(0, 100, (2, 7))), 16, 10000.0, None, 128)
    x = jnp.asarray(rng.standard_normal((2, 7, 3, 16)), dtype)
    g = jnp.asarray(rng.standard_normal((2, 7, 3, 16)), dtype)

    def formula(x):
        rotated = jnp.concatenate([-x[..., 8:], x[..., :8]], axis=-1)
        return x * cos[:, :, None] + rotated * sin[:, :, None]

    got = jax.vjp(lambda x: L.apply_rope(x, cos, sin), x)[1](g)[0]
    want = jax.vjp(formula, x.astype(jnp.float32))[1](g.astype(jnp.float32))[0]
    assert got.dtype == dtype
    tol = 1e-6 if dtype == jnp.float32 else 2 ** -8
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=tol, atol=tol)
