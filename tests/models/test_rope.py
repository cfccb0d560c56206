"""RoPE tables and their gradient against Hugging Face and autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ledex_jax.models.rope import apply_rope, rope_tables


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
    cos, sin = rope_tables(jnp.asarray(positions), head_dim, theta, factor, max_positions)
    np.testing.assert_allclose(np.asarray(cos), cos_ref.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sin), sin_ref.numpy(), rtol=0, atol=1e-6)
    past, _ = rope_tables(jnp.asarray([[max_positions]]), head_dim, theta, factor, max_positions)
    assert np.isnan(np.asarray(past)).all()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rope_gradient_is_the_inverse_rotation(dtype):
    """`apply_rope`'s custom gradient equals autodiff of the rotate-half formula (computed in
    float32; in bf16 ours rounds once, where autodiff of the bf16 formula rounds three times)."""
    rng = np.random.default_rng(0)
    cos, sin = rope_tables(jnp.asarray(rng.integers(0, 100, (2, 7))), 16, 10000.0, None, 128)
    x = jnp.asarray(rng.standard_normal((2, 7, 3, 16)), dtype)
    g = jnp.asarray(rng.standard_normal((2, 7, 3, 16)), dtype)

    def formula(x):
        rotated = jnp.concatenate([-x[..., 8:], x[..., :8]], axis=-1)
        return x * cos[:, :, None] + rotated * sin[:, :, None]

    got = jax.vjp(lambda x: apply_rope(x, cos, sin), x)[1](g)[0]
    want = jax.vjp(formula, x.astype(jnp.float32))[1](g.astype(jnp.float32))[0]
    assert got.dtype == dtype
    tol = 1e-6 if dtype == jnp.float32 else 2 ** -8
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=tol, atol=tol)
