"""Attention through the seam: XLA's path against a plain softmax, the cuDNN call's masks and
layouts, and a model on each implementation (XLA, Pallas in interpret mode, the CPU kernel
where it runs) in the forward, the gradients and the sampler's prefill."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_marks import needs

from ledex_jax import ops as O
from ledex_jax.models import build_model, get_preset
from ledex_jax.ops import attention as attention_op
from ledex_jax.ops import choice
from ledex_jax.ops import pallas_attention
from ledex_jax.sampling import Sampler

XLA = O.Ops()
heads_first = lambda x: x.transpose(0, 2, 1, 3)


def test_dot_attention_matches_reference():
    """GQA over [B, Hkv, S, D] keys/values equals a plain per-head softmax attention."""
    rng = np.random.default_rng(2)
    b, t, h, hkv, d = 2, 5, 4, 2, 8
    q = rng.normal(size=(b, t, h, d)).astype(np.float32)
    k = rng.normal(size=(b, t, hkv, d)).astype(np.float32)
    v = rng.normal(size=(b, t, hkv, d)).astype(np.float32)
    visible = O.AttentionMask.build(t, jnp.ones((b, t), jnp.int32)).visible
    got = O.dot_attention(XLA, q, heads_first(k), heads_first(v), visible, d ** -0.5)
    kr, vr = np.repeat(k, h // hkv, axis=2), np.repeat(v, h // hkv, axis=2)
    scores = np.einsum("bthd,bshd->bhts", q, kr) * d ** -0.5
    scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, np.einsum("bhts,bshd->bthd", probs, vr), rtol=1e-5, atol=1e-5)


def test_causal_blocks_equal_one_product_on_real_queries(monkeypatch):
    """Query blocks over the keys up to their end (block 4 over 11 tokens: 3 blocks, the last
    partial), with left padding and packed segments, equal `dot_attention` on every real query,
    and so do their gradients."""
    monkeypatch.setattr(attention_op, "CAUSAL_BLOCK", 4)
    rng = np.random.default_rng(4)
    b, t, h, hkv, d = 2, 11, 4, 2, 8
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, n, d)), jnp.float32) for n in (h, hkv, hkv))
    attention = np.ones((b, t), np.int32)
    attention[1, :5] = 0
    segments = np.array([[1] * 6 + [2] * 5, [0] * 5 + [1] * 6], np.int32)
    visible = O.AttentionMask.build(t, jnp.asarray(attention), jnp.asarray(segments)).visible
    real = jnp.asarray(attention, jnp.float32)[:, :, None, None]

    def loss(fn, q, k, v):
        out = fn(XLA, q, heads_first(k), heads_first(v), visible, d ** -0.5)
        return jnp.sum(jnp.sin(out) * real), out

    (_, want), want_grads = jax.value_and_grad(lambda *a: loss(O.dot_attention, *a), (0, 1, 2), has_aux=True)(q, k, v)
    (_, got), got_grads = jax.value_and_grad(lambda *a: loss(attention_op.causal_block_attention, *a), (0, 1, 2),
                                             has_aux=True)(q, k, v)
    np.testing.assert_allclose(got * real, want * real, rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_query_blocks_after_a_prefix_equal_one_product(monkeypatch):
    """Tokens written after a static prefix (a prompt's rest after a shared prefix): query blocks
    over the keys up to their end equal one product over the whole cache (prefix 5 slots, 2 of
    them padding, 7 queries in blocks of 3, 4 empty slots after them)."""
    monkeypatch.setattr(attention_op, "CAUSAL_BLOCK", 3)
    rng = np.random.default_rng(5)
    b, pp, t, s, h, hkv, d = 2, 5, 7, 16, 4, 2, 8
    q = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32)
    cache = tuple(jnp.asarray(rng.normal(size=(b, hkv, s, d)), jnp.float32) for _ in range(2))
    slots = np.zeros((b, s), np.int32)
    slots[:, :pp + t] = 1
    slots[1, :2] = 0
    mask = O.AttentionMask.build(t, jnp.asarray(slots), q_offset=pp)
    new_kv = tuple(jnp.asarray(rng.normal(size=(b, t, hkv, d)), jnp.float32) for _ in range(2))
    got, written = attention_op.attend(XLA, q, *new_kv, mask, d ** -0.5, cache=cache)
    want = O.dot_attention(XLA, q, *written, mask.visible, d ** -0.5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mask_segments_for_segment_kernels():
    """Padding gets segment 0, real tokens 1 + their packed segment id."""
    key_mask = jnp.asarray([[0, 0, 1, 1], [1, 1, 1, 1]])
    q, kv = O.AttentionMask.build(4, key_mask, jnp.asarray([[0, 0, 1, 1], [1, 1, 2, 2]])).segments()
    np.testing.assert_array_equal(kv, [[0, 0, 2, 2], [2, 2, 3, 3]])
    np.testing.assert_array_equal(q, kv)
    _, kv = O.AttentionMask.build(4, key_mask).segments()
    np.testing.assert_array_equal(kv, [[0, 0, 1, 1], [1, 1, 1, 1]])


def test_fused_attention_plumbing_matches_dot_attention():
    """The GPU path's masks and layouts (run here with JAX's XLA implementation of the same call):
    packed segments and left padding, GQA; equal on every real query."""
    rng = np.random.default_rng(3)
    b, t, h, hkv, d = 2, 8, 4, 2, 8
    q, k, v = (rng.normal(size=(b, t, n, d)).astype(np.float32) for n in (h, hkv, hkv))
    attention = np.ones((b, t), np.int32)
    attention[1, :3] = 0  # left padding
    segments = np.array([[1, 1, 1, 2, 2, 2, 2, 2], [0, 0, 0, 1, 1, 1, 1, 1]], np.int32)
    visible = O.AttentionMask.build(t, jnp.asarray(attention), jnp.asarray(segments)).visible
    ref = O.dot_attention(XLA, q, heads_first(k), heads_first(v), visible, d ** -0.5)
    got = attention_op.fused_attention(q, k, v, visible, d ** -0.5, implementation="xla")
    real = attention.astype(bool)
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(ref)[real], rtol=1e-5, atol=1e-5)


IMPLEMENTATIONS = [pytest.param("pallas", "float32", id="pallas-f32"),
                   pytest.param("pallas", "bfloat16", id="pallas-bf16"),
                   pytest.param("cpu", "bfloat16", id="cpu-flash_attention", marks=needs("flash_attention"))]


def _batch():
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 200, (2, 40)), jnp.int32)
    mask = jnp.ones((2, 40), jnp.int32).at[1, :7].set(0)
    segments = jnp.asarray(np.r_[[1] * 25 + [2] * 15, [0] * 7 + [1] * 33].reshape(2, 40), jnp.int32)
    return ids, mask, segments


@pytest.mark.parametrize("kernels,dtype", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt_bigcode"])
def test_model_attention_implementation_matches_xla(name, kernels, dtype):
    """Forward (left padding + packed segments) and gradients on `kernels` agree with XLA's at
    real tokens, head size 64 with GQA (Llama) / MQA (GPTBigCode)."""
    cfg = get_preset(name, hidden_size=256, intermediate_size=256, num_heads=4, dtype=dtype)
    ids, mask, segments = _batch()
    real = np.asarray(mask, bool)

    def loss(model):
        lp = model.target_log_probs(ids, jnp.roll(ids, -1, 1), mask, segment_ids=segments)
        return jnp.sum(lp * mask), lp

    results = {}
    for choice_ in (kernels, "xla"):
        model = build_model(cfg.replace(kernels=choice_), seed=2)
        (_, lp), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(model)
        results[choice_] = np.asarray(lp)[real], jax.tree.leaves(grads)
    atol = 1e-4 if dtype == "float32" else 0.08
    np.testing.assert_allclose(results[kernels][0], results["xla"][0], atol=atol)
    for g, r in zip(results[kernels][1], results["xla"][1]):
        g, r = np.asarray(g, np.float32).ravel(), np.asarray(r, np.float32).ravel()
        if np.linalg.norm(r) > 1.0:  # (a key bias's gradient is ~0 in exact arithmetic: noise)
            assert g @ r / (np.linalg.norm(g) * np.linalg.norm(r)) > (0.99999 if dtype == "float32" else 0.9999)


def test_auto_on_a_tpu_backend_traces_the_pallas_kernel(monkeypatch):
    """`kernels="auto"` on a TPU backend (faked at the seam) puts splash attention in the
    training forward; it is traced, not run (this host has no TPU)."""
    monkeypatch.setattr(choice.jax, "default_backend", lambda: "tpu")
    model = build_model(get_preset("tiny_llama", hidden_size=256, num_heads=4, dtype="bfloat16"), seed=2)
    assert model.ops().attention == "pallas" and not model.ops().interpret
    ids, mask, _ = _batch()
    jaxpr = str(jax.make_jaxpr(lambda m: m(ids, mask))(model))
    assert "pallas_call" in jaxpr


def test_auto_on_a_gpu_backend_calls_cudnn(monkeypatch):
    """`kernels="auto"` on a GPU backend (faked at the seam) sends bf16 attention to cuDNN's
    fused call; here it runs that call's XLA implementation."""
    monkeypatch.setattr(choice.jax, "default_backend", lambda: "gpu")
    calls = []
    real = attention_op.fused_attention
    monkeypatch.setattr(attention_op, "fused_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k, implementation="xla"))
    model = build_model(get_preset("tiny_llama", hidden_size=256, num_heads=4, dtype="bfloat16"), seed=2)
    ids, mask, _ = _batch()
    model(ids, mask)
    assert calls and model.ops().attention == "cudnn"


def test_sampler_prefill_through_pallas(monkeypatch):
    """The sampler's prefill (a prompt into a fresh cache) attends through the chosen training
    kernel: Pallas here, with the same greedy tokens and log-probs as XLA's path."""
    calls = []
    real = pallas_attention.pallas_attention
    monkeypatch.setattr(pallas_attention, "pallas_attention", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    model = build_model(get_preset("tiny_llama", hidden_size=128, num_heads=4), seed=5)
    prompts = [[1, 5, 6, 7, 8, 9], [1, 9], [1, 3, 4]]
    for unrolled in (True, False):
        got = Sampler(model, max_prompt_len=16, kernels="pallas", unrolled=unrolled).generate(
            prompts, 6, greedy=True, eos_ids=[])
        want = Sampler(model, max_prompt_len=16, kernels="xla", unrolled=unrolled).generate(
            prompts, 6, greedy=True, eos_ids=[])
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
    assert calls and all(shape[1] == 16 for shape in calls)  # the prompt bucket, never a decode step
