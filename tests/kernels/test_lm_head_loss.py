"""The CPU LM-head loss kernel (`kernels/lm_head_loss.py`) against logits + log-softmax in XLA:
values and gradients, vocabularies that do not fill the last tile chunk, targets outside the
vocabulary, and the model's `target_log_probs` on either implementation. Needs the kernel (AMX);
elsewhere the kernel's tests skip and the model keeps XLA's ops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernel_marks import needs

from ledex_jax import ops as O
from ledex_jax.kernels import lm_head_loss as lm
from ledex_jax.models import build_model, get_preset


def reference_nll(h, w, targets):
    logits = jnp.dot(h, w, preferred_element_type=jnp.float32)
    return -O.token_log_probs(logits[None], targets[None])[0]


@needs("lm_head_loss")
@pytest.mark.parametrize("n,e,v", [(5, 64, 100), (37, 96, 1000), (300, 576, 4100), (16, 32, 64)])
def test_matches_log_softmax_of_the_logits(n, e, v):
    rng = np.random.default_rng(n)
    h = jnp.asarray(rng.standard_normal((n, e)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((e, v)) * 0.2, jnp.bfloat16)
    targets = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    weights = jnp.asarray(rng.random(n), jnp.float32)
    np.testing.assert_allclose(lm.token_nll(h, w, targets), reference_nll(h, w, targets), rtol=1e-5, atol=1e-5)

    def grads(nll):
        return jax.grad(lambda h, w: jnp.sum(nll(h, w, targets) * weights), (0, 1))(h, w)

    for got, want in zip(grads(lm.token_nll), grads(reference_nll)):
        got, want = np.asarray(got, np.float32).ravel(), np.asarray(want, np.float32).ravel()
        # The kernel rounds the logits' gradient to bf16 for its products, as the XLA path's
        # bf16 backward (`ops.dense.lowp_einsum`) does.
        assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()
        assert got @ want / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.99999


@needs("lm_head_loss")
def test_target_outside_the_vocabulary_gives_the_log_sum_exp():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.standard_normal((3, 64)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((64, 70)), jnp.bfloat16)
    logits = jnp.dot(h, w, preferred_element_type=jnp.float32)
    got = lm.token_nll(h, w, jnp.asarray([-1, 70, 5], jnp.int32))
    want = jax.nn.logsumexp(logits, -1) - jnp.asarray([0.0, 0.0, 1.0]) * logits[:, 5]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bad_shapes_name_the_problem():
    h = jnp.zeros((4, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="targets"):
        lm._forward(h, jnp.zeros((4, 2, 16, 32), jnp.bfloat16), jnp.zeros((3,), jnp.int32), 10)
    assert not lm.applies(h[:, :48], jnp.zeros((48, 10), jnp.bfloat16))  # embedding not whole 32-blocks
    assert not lm.applies(h.astype(jnp.float32), jnp.zeros((64, 10), jnp.float32))


@needs("lm_head_loss")
@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt_bigcode"])
def test_model_target_log_probs_on_the_kernel_match_xla(name):
    cfg = get_preset(name, hidden_size=128, intermediate_size=256, dtype="bfloat16")
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(3, 200, (2, 24)), jnp.int32)
    targets = jnp.roll(ids, -1, axis=1)
    mask = jnp.ones((2, 24), jnp.int32).at[1, :5].set(0)

    results, models = {}, {}
    for kernels in ("cpu", "xla"):
        models[kernels] = model = build_model(cfg.replace(kernels=kernels), seed=4)
        fn = jax.jit(jax.value_and_grad(lambda m: jnp.sum(m.target_log_probs(ids, targets, mask) * mask)))
        text = fn.lower(model).as_text()
        value, grads = fn(model)
        assert ("ledex_lm_head_loss_fwd" in text) == (kernels == "cpu")
        results[kernels] = float(value), jax.tree.leaves(grads)
    assert abs(results["cpu"][0] - results["xla"][0]) <= 1e-3 * abs(results["xla"][0])
    for got, want in zip(results["cpu"][1], results["xla"][1]):
        got, want = np.asarray(got, np.float32).ravel(), np.asarray(want, np.float32).ravel()
        if np.linalg.norm(want) > 1.0:
            assert got @ want / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.999
    # On XLA: exactly the log-softmax of forward's logits.
    got = jax.jit(lambda m: m.target_log_probs(ids, targets, mask))(models["xla"])
    want = jax.jit(lambda m: O.token_log_probs(m(ids, mask), targets))(models["xla"])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
