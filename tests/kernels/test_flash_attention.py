"""The CPU attention kernel for bf16 training/scoring (`kernels/flash_attention.py`) against XLA's
path (`ops.dot_attention`): outputs, gradients, masks (causal, left padding, packed segments),
GQA/MQA, and the model on either implementation. Needs the kernel (AMX); elsewhere the kernel's
tests skip and the model keeps XLA's attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_marks import needs

from ledex_jax import ops as O
from ledex_jax.kernels import flash_attention as fa
from ledex_jax.models import build_model, get_preset

XLA = O.Ops()


def inputs(b, t, h, hkv, d, pad, segments, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal(s), jnp.bfloat16) for s in ((b, t, h, d), (b, t, hkv, d), (b, t, hkv, d)))
    mask = np.ones((b, t), np.int32)
    mask[1:, :pad] = 0  # left padding on every row but the first
    segs = None
    if segments:
        segs = np.ones((b, t), np.int32)
        for i, cut in enumerate(range(t // segments, t, t // segments)):
            segs[:, cut:] = i + 2
        segs = jnp.asarray(segs * mask)
    return q, k, v, O.AttentionMask.build(t, jnp.asarray(mask), segs).visible


def xla_attention(q, k, v, visible, scale):
    heads_first = lambda x: x.transpose(0, 2, 1, 3)
    return O.dot_attention(XLA, q, heads_first(k), heads_first(v), visible, scale)


def kernel_attention(q, k, v, visible, scale):
    return fa.flash_attention(q, k, v, visible, scale)


@needs("flash_attention")
@pytest.mark.parametrize("b,t,h,hkv,d,pad,segments", [
    (1, 32, 1, 1, 64, 0, 0),       # one block
    (2, 77, 6, 3, 64, 13, 0),      # ragged length, GQA, left padding
    (2, 100, 4, 1, 128, 0, 3),     # MQA, head size 128, packed segments
    (3, 300, 9, 3, 64, 40, 2),     # SmolLM2's heads, padding and segments together
    (1, 45, 2, 2, 256, 5, 0),      # largest head size
])
def test_matches_xla_attention(b, t, h, hkv, d, pad, segments):
    q, k, v, visible = inputs(b, t, h, hkv, d, pad, segments)
    scale = d ** -0.5
    assert fa.applies(q, k, v)
    sees = np.asarray(visible.any(-1))  # query rows that see some key
    got = np.asarray(jax.jit(kernel_attention, static_argnums=4)(q, k, v, visible, scale), np.float32)
    want = np.asarray(jax.jit(xla_attention, static_argnums=4)(q, k, v, visible, scale), np.float32)
    np.testing.assert_allclose(got[sees], want[sees], rtol=2 ** -7, atol=2 ** -8)
    assert not got[~sees].any()  # rows that see nothing: zeros

    weights = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape) * sees[:, :, None, None], jnp.float32)

    def grads(attention):
        loss = lambda q, k, v: jnp.sum(attention(q, k, v, visible, scale).astype(jnp.float32) * weights)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    for name, g, r in zip("qkv", grads(kernel_attention), grads(xla_attention)):
        g, r = np.asarray(g, np.float32).ravel(), np.asarray(r, np.float32).ravel()
        assert g.dtype == r.dtype
        # Both round to bf16 at different points (XLA also rounds dP); agreement to bf16 precision.
        assert np.abs(g - r).max() <= 2e-2 * np.abs(r).max(), name
        assert g @ r / (np.linalg.norm(g) * np.linalg.norm(r)) > 0.9999, name


def test_applies_only_where_it_can():
    q, k, v, _ = inputs(1, 8, 2, 1, 64, 0, 0)
    assert fa.applies(q, k, v)
    assert not fa.applies(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))  # XLA keeps float32
    assert not fa.applies(q[..., :32], k[..., :32], v[..., :32])  # head size not a multiple of 64


def test_bad_shapes_name_the_problem():
    q, k, v, visible = inputs(1, 8, 2, 1, 64, 0, 0)
    with pytest.raises(ValueError, match=r"visible \(1, 8, 7\)"):
        fa.flash_attention(q, k, v, visible[..., :7], 0.125)
    with pytest.raises(ValueError, match="Hkv dividing H"):
        fa.flash_attention(q[:, :, :1], jnp.concatenate([k, k], 2), jnp.concatenate([v, v], 2), visible, 0.1)


@needs("flash_attention")
@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt_bigcode"])
def test_model_attention_kernel_matches_xla(name):
    """Training/scoring forward (no KV cache) in bf16 with head size 64: the kernel's logits and
    gradients agree with XLA's attention at real tokens; it is traced in only when selected."""
    cfg = get_preset(name, hidden_size=256, intermediate_size=256, num_heads=4, dtype="bfloat16")
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 200, (2, 40)), jnp.int32)
    mask = jnp.ones((2, 40), jnp.int32).at[1, :7].set(0)
    real = np.asarray(mask, bool)

    def loss(model):
        logits = model(ids, mask)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 5] * mask), logits

    results = {}
    for kernels in ("cpu", "xla"):
        model = build_model(cfg.replace(kernels=kernels), seed=2)
        fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
        lowered = fn.lower(model).as_text()
        (_, logits), grads = fn(model)
        uses = kernels == "cpu"
        assert ("ledex_flash_attention_fwd" in lowered) == uses and ("ledex_flash_attention_bwd" in lowered) == uses
        results[kernels] = np.asarray(logits)[real], jax.tree.leaves(grads)
    np.testing.assert_allclose(results["cpu"][0], results["xla"][0], atol=0.08)
    cosine = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    for g, r in zip(results["cpu"][1], results["xla"][1]):
        g, r = np.asarray(g, np.float32).ravel(), np.asarray(r, np.float32).ravel()
        if np.linalg.norm(r) > 1.0:  # (a key bias's gradient is ~0 in exact arithmetic: bf16 noise)
            assert cosine(g, r) > 0.9999
