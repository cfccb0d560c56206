"""The CPU kernels for products and decode attention (AMX bf16 matmul and packing, AVX-512 f32
matmul, AVX-512 decode attention) against XLA's ops, and the sampler and cached forward on each
implementation. Each test needs only its own kernel (`kernel_marks.needs`): elsewhere it skips
and the seam keeps XLA's op."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_marks import implementations, needs

from ledex_jax import ops as O
from ledex_jax.kernels import amx, decode_attention, f32
from ledex_jax.models import build_model, get_preset
from ledex_jax.sampling import Sampler

XLA = O.Ops()

RNG = np.random.default_rng(0)


def bf16(shape, scale=1.0):
    return jnp.asarray(RNG.standard_normal(shape) * scale, jnp.bfloat16)


@needs("amx_matmul")
@pytest.mark.parametrize("m,k,n", [(1, 576, 1536), (5, 64, 100), (16, 32, 16), (17, 576, 192), (40, 1536, 576),
                                   (100, 96, 200)])
@pytest.mark.parametrize("out_dtype", [jnp.float32, jnp.bfloat16])
def test_amx_matmul_matches_xla(m, k, n, out_dtype):
    x, w = bf16((m, k)), bf16((k, n), 0.1)
    got = jax.jit(lambda x, p: amx.matmul(x, p, n, out_dtype))(x, jax.jit(amx.pack)(w))
    want = jnp.dot(x, w, preferred_element_type=jnp.float32)
    assert got.dtype == out_dtype and got.shape == (m, n)
    if out_dtype == jnp.float32:  # same products, another summation order
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:  # rounded once from (nearly) the same float32 value: at most one bf16 step apart
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want.astype(jnp.bfloat16), np.float32),
                                   rtol=2 ** -7, atol=1e-6)


@needs("f32_matmul")
@pytest.mark.parametrize("m,k,n", [(1, 576, 1536), (5, 64, 100), (16, 48, 16), (17, 576, 192), (40, 96, 33)])
def test_f32_matmul_matches_xla(m, k, n):
    x = jnp.asarray(RNG.standard_normal((m, k)), jnp.float32)
    w = jnp.asarray(RNG.standard_normal((k, n)) * 0.1, jnp.float32)
    got = jax.jit(lambda x, p: f32.matmul(x, p, n))(x, jax.jit(f32.pack)(w))
    assert got.shape == (m, n)
    np.testing.assert_allclose(got, x @ w, rtol=1e-5, atol=1e-5)
    layout = O.decode_layout(O.Ops(decode_matmul="f32"), w.reshape(k, 1, n), 1)
    assert layout.kind == "f32"
    np.testing.assert_allclose(layout.apply(x[None]), (x @ w)[None, :, None, :], rtol=1e-5, atol=1e-5)


@needs("amx_matmul")
@pytest.mark.parametrize("m,k,n", [(10, 40, 100), (64, 128, 256)])
def test_amx_dense_and_its_gradients(m, k, n):
    """The training-side product (LM head): ragged sizes are padded; gradients as float32 math
    with a bf16-rounded cotangent."""
    x, w = bf16((m, k)), bf16((k, n), 0.1)
    probe = jnp.asarray(RNG.standard_normal((m, n)), jnp.float32)
    got = jax.jit(amx.dense)(x, w)
    np.testing.assert_allclose(got, jnp.dot(x, w, preferred_element_type=jnp.float32), rtol=1e-5, atol=1e-5)
    ours = jax.jit(jax.grad(lambda x, w: jnp.sum(amx.dense(x, w) * probe), (0, 1)))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(x.astype(jnp.float32) @ w.astype(jnp.float32)
                                        * probe.astype(jnp.bfloat16).astype(jnp.float32)), (0, 1))(x, w)
    for a, b in zip(ours, ref):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2e-2, atol=2e-2)


@needs("amx_matmul")
def test_amx_layout_applies_like_matmul():
    x = bf16((2, 3, 4, 32))  # [B, T, heads, head_dim]: o_proj contracts two axes
    w = bf16((4, 32, 96), 0.1)
    amx_ops = O.Ops(decode_matmul="amx")
    got = jax.jit(lambda x, w: O.decode_layout(amx_ops, w, 2).apply(x))(x, w)
    want = O.matmul(XLA, "bthd,hde->bte", x, w)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=2 ** -7, atol=1e-6)
    with pytest.raises(ValueError, match="trailing input dims"):
        O.decode_layout(amx_ops, w, 2).apply(x[..., :16])


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="not a multiple of 32"):
        amx.pack(jnp.zeros((48, 16), jnp.bfloat16))
    with pytest.raises(ValueError, match="2-D float32"):
        f32.matmul(jnp.zeros((2, 64), jnp.bfloat16), f32.pack(jnp.zeros((64, 16))), 16)
    packed = amx.pack(jnp.zeros((64, 16), jnp.bfloat16), reference=True)
    with pytest.raises(ValueError, match="2-D bfloat16"):
        amx.matmul(jnp.zeros((2, 64), jnp.float32), packed, 16)
    with pytest.raises(ValueError, match="do not match"):
        amx.matmul(jnp.zeros((2, 32), jnp.bfloat16), packed, 16)


@needs("decode_attention")
@pytest.mark.parametrize("b,h,hkv,s,d", [(16, 9, 3, 176, 64), (1, 4, 4, 33, 32), (3, 8, 1, 37, 128), (2, 4, 2, 300, 256)])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_decode_attention_matches_xla(b, h, hkv, s, d, dtype):
    q, k, v = (bf16(shape).astype(dtype) for shape in ((b, 1, h, d), (b, hkv, s, d), (b, hkv, s, d)))
    visible = jnp.asarray(RNG.random((b, s)) < 0.6).at[0].set(False)  # row 0 sees nothing
    got = jax.jit(lambda *a: decode_attention.decode_attention(*a, d ** -0.5))(q, k, v, visible)
    want = jax.jit(lambda q, k, v, vis: O.dot_attention(XLA, q, k, v, vis[:, None], d ** -0.5))(q, k, v, visible)
    assert got.dtype == dtype
    tol = dict(rtol=2 ** -7, atol=2 ** -9) if dtype == jnp.bfloat16 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), **tol)


@needs("decode_attention")
def test_decode_attention_rejects_several_tokens():
    q, k = bf16((1, 2, 4, 32)), bf16((1, 4, 8, 32))
    with pytest.raises(ValueError, match="one new token"):
        decode_attention.decode_attention(q, k, k, jnp.ones((1, 8), bool), 1.0)


def kernel_sized(name, dtype="bfloat16", kernels="auto"):
    """A tiny preset with head_dim 32 and sizes the kernels take."""
    return build_model(get_preset(name, hidden_size=128, intermediate_size=256, num_heads=4,
                                  dtype=dtype, param_dtype=dtype, kernels=kernels), seed=3)


@pytest.mark.parametrize("kernels", implementations("decode_attention"))
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt_bigcode"])
def test_cached_forward_attention(name, dtype, kernels):
    """Decoding over a cache agrees with the uncached forward; the decode-attention kernel is
    traced in exactly when `kernels` selects it."""
    model = kernel_sized(name, dtype, kernels)
    ids = jnp.asarray([[5, 6, 7, 8], [9, 10, 11, 12]], jnp.int32)
    mask = jnp.ones((2, 8), jnp.int32)

    def step(model):
        prefix = model.forward(ids[:, :3], mask, cache=model.init_cache(2, 8))
        return model.forward(ids[:, 3:], mask, cache=prefix.cache).logits

    lowered = jax.jit(step).lower(model).as_text()
    assert ("ledex_decode_attention" in lowered) == (kernels == "cpu")
    want = model(ids)[:, 3:]
    np.testing.assert_allclose(np.asarray(jax.jit(step)(model)), np.asarray(want),
                               atol=0.05 if dtype == "bfloat16" else 1e-4)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt_bigcode"])
@pytest.mark.parametrize("dtype,kind,atol", [pytest.param("bfloat16", "amx", 0.05, marks=needs("amx_matmul")),
                                             pytest.param("float32", "f32", 1e-4, marks=needs("f32_matmul"))])
def test_sampler_with_kernels_matches_xla(name, dtype, kind, atol):
    model = kernel_sized(name, dtype)
    prompts = [[1, 5, 6, 7], [1, 9], [1, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 200, 17]]
    with_kernels = Sampler(model, max_prompt_len=16, kernels="cpu")
    weights = with_kernels.layer_params
    assert weights.layers[0]["down_proj" if name == "tiny_llama" else "c_proj"].kind == kind
    assert weights.lm_head.kind == kind
    a = with_kernels.generate(prompts, 12, greedy=True, eos_ids=[])
    xla = Sampler(model, max_prompt_len=16, kernels="xla")
    assert xla.layer_params.lm_head.kind == "xla"
    b = xla.generate(prompts, 12, greedy=True, eos_ids=[])
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=atol)


@needs("amx_matmul")
@pytest.mark.parametrize("k,n", [(32, 5), (64, 100), (576, 1536), (2048, 70)])
def test_pack_kernel_lays_out_tiles_as_the_xla_reference(k, n):
    """The packing kernel, reading w or w^T in place, gives exactly the tiles of XLA's
    reshape/transpose."""
    w = bf16((k, n))
    want = jax.jit(lambda w: amx.pack(w, reference=True))(w)
    np.testing.assert_array_equal(np.asarray(jax.jit(amx.pack)(w)), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda w: amx.pack(w.T, transposed=True))(w)), np.asarray(want))
