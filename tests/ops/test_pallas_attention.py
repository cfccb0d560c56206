"""Splash-attention path checked against plain XLA attention, in Pallas interpret mode on CPU."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ledex_jax.ops.pallas_attention import _shard_specs, pallas_attention
from ledex_jax.sharding import DEFAULT_RULES, make_mesh, use_mesh

H = 4
TOL = {jnp.float32: 2e-5, jnp.bfloat16: 2e-2}  # relative to the reference's largest magnitude


def segments(kind: str, b: int, t: int) -> np.ndarray:
    """Segment ids per row: 0 is padding, packed examples count up from 1."""
    ids = np.ones((b, t), np.int32)
    if kind == "left_pad":
        ids[0, : t // 3] = 0
    elif kind == "packed":
        ids[0] = np.repeat([1, 2, 3, 0], [t // 4, t // 3, t // 5, t - t // 4 - t // 3 - t // 5])
        ids[1] = np.repeat([1, 2, 0], [t // 2, t // 3, t - t // 2 - t // 3])
    return ids


def inputs(b, t, s, hkv, d, dtype, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (b, t, H, d), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (b, s, hkv, d), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (b, s, hkv, d), jnp.float32).astype(dtype)
    return q, k, v


def reference(q, k, v, q_seg, kv_seg, scale):
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    group = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    logits = jnp.einsum("bthd,bshd->bhts", q, k) * scale
    causal = jnp.arange(q.shape[1])[:, None] >= jnp.arange(k.shape[1])[None, :]
    visible = causal & (q_seg[:, None, :, None] == kv_seg[:, None, None, :])
    probs = jax.nn.softmax(jnp.where(visible, logits, -1e30), axis=-1)
    return jnp.einsum("bhts,bshd->bthd", probs, v)


def loss(attention, q, k, v, q_seg, kv_seg, scale, cotangent):
    """Sums the output against a fixed cotangent over real query rows only."""
    out = attention(q, k, v, q_seg, kv_seg, scale).astype(jnp.float32)
    return jnp.sum(out * cotangent * (q_seg > 0)[:, :, None, None])


def pallas(q, k, v, q_seg, kv_seg, scale):
    return pallas_attention(q, k, v, q_seg, kv_seg, scale, interpret=True)


def assert_close(actual, expected, dtype, rows=None):
    actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert np.isfinite(actual).all()
    if rows is not None:
        actual, expected = actual[rows], expected[rows]
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    assert err < TOL[dtype], f"relative error {err:.2e}"


@pytest.mark.parametrize("kind, t, s, hkv, d, dtype", [
    ("causal", 128, 128, 4, 128, jnp.float32),
    ("left_pad", 256, 256, 2, 64, jnp.float32),
    ("packed", 256, 256, 1, 64, jnp.float32),
    ("packed", 256, 256, 2, 128, jnp.bfloat16),
    ("left_pad", 128, 128, 1, 64, jnp.bfloat16),
    ("packed", 200, 200, 2, 64, jnp.float32),
    ("causal", 100, 300, 2, 64, jnp.float32),
])
def test_forward_matches_reference(kind, t, s, hkv, d, dtype):
    q, k, v = inputs(2, t, s, hkv, d, dtype)
    q_seg, kv_seg = segments(kind, 2, t), segments(kind, 2, s)
    out = pallas(q, k, v, q_seg, kv_seg, d ** -0.5)
    assert out.shape == q.shape and out.dtype == dtype
    assert_close(out, reference(q, k, v, q_seg, kv_seg, d ** -0.5), dtype, rows=q_seg > 0)


@pytest.mark.parametrize("kind, t, hkv, d, dtype", [
    ("left_pad", 256, 2, 64, jnp.float32),
    ("packed", 200, 1, 128, jnp.float32),
    ("packed", 128, 4, 64, jnp.bfloat16),
])
def test_gradients_match_reference(kind, t, hkv, d, dtype):
    q, k, v = inputs(2, t, t, hkv, d, dtype)
    seg = segments(kind, 2, t)
    cotangent = jax.random.normal(jax.random.key(1), q.shape)
    grads = [jax.grad(loss, argnums=(1, 2, 3))(fn, q, k, v, seg, seg, d ** -0.5, cotangent)
             for fn in (pallas, reference)]
    for name, got, want in zip("qkv", *grads):
        assert got.dtype == dtype, name
        assert_close(got, want, dtype)


def test_sharded_matches_unsharded():
    b, t, d = 4, 256, 64
    seg = segments("packed", b, t)
    cotangent = jax.random.normal(jax.random.key(1), (b, t, H, d))
    for mesh_shape, hkv in [((2, 2, 2), 2), ((1, 4, 2), 1), ((1, 2, 4), 2)]:
        q, k, v = inputs(b, t, t, hkv, d, jnp.float32)
        expected = pallas(q, k, v, seg, seg, d ** -0.5)
        with use_mesh(make_mesh(mesh_shape)):
            out = jax.jit(pallas, static_argnums=5)(q, k, v, seg, seg, d ** -0.5)
        np.testing.assert_allclose(out, expected, atol=1e-6, err_msg=f"mesh {mesh_shape}, kv heads {hkv}")

    q, k, v = inputs(b, t, t, 2, d, jnp.float32)
    grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=(0, 6))
    expected = grad(pallas, q, k, v, seg, seg, d ** -0.5, cotangent)
    with use_mesh(make_mesh((2, 2, 2))):
        got = grad(pallas, q, k, v, seg, seg, d ** -0.5, cotangent)
    for name, g, e in zip("qkv", got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5, err_msg=f"d{name}")


@pytest.mark.parametrize("mesh_shape, hkv, heads, kv_heads", [
    ((2, 2, 2), 4, "tensor", "tensor"),
    ((2, 2, 2), 1, "tensor", None),  # MQA: every shard needs the single kv head
    ((1, 2, 4), 2, None, None),      # 2 kv heads cannot follow a 4-way split of the query heads
])
def test_shard_specs_keep_heads_grouped(mesh_shape, hkv, heads, kv_heads):
    q_spec, kv_spec, seg_spec = _shard_specs(make_mesh(mesh_shape), DEFAULT_RULES, (4, 128, H, 64), hkv)
    assert q_spec[2] == heads and kv_spec[2] == kv_heads
    assert q_spec[0] == kv_spec[0] == seg_spec[0]


@pytest.mark.parametrize("q_shape, kv_shape, seg_t, match", [
    ((2, 128, 4, 64), (2, 128, 3, 64), 128, "kv heads 3 do not divide query heads 4"),
    ((2, 128, 4, 64), (2, 128, 2, 32), 128, r"k \(2, 128, 2, 32\)"),
    ((2, 128, 4, 64), (2, 128, 2, 64), 100, r"q_segment_ids \(2, 100\)"),
    ((2, 256, 4, 64), (2, 128, 2, 64), 256, "query length 256 exceeds key length 128"),
    ((256, 4, 64), (2, 128, 2, 64), 256, r"q \(256, 4, 64\)"),
])
def test_bad_shapes_raise(q_shape, kv_shape, seg_t, match):
    q, k = jnp.zeros(q_shape), jnp.zeros(kv_shape)
    with pytest.raises(ValueError, match=match):
        pallas(q, k, k, jnp.ones((q_shape[0], seg_t), jnp.int32), jnp.ones(kv_shape[:2], jnp.int32), 0.125)
