"""Remat policies and unrolled layers change what the backward pass stores and how layers are
compiled, never the gradients."""
import jax
from jax._src.ad_checkpoint import saved_residuals  # public only as print_saved_residuals
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ledex_jax.models import build_model, get_preset
from ledex_jax.models.config import REMAT_POLICIES

T = 24


def loss_fn(policy, scan_layers=True):
    model = build_model(get_preset("tiny_llama", remat_policy=policy, scan_layers=scan_layers))
    graphdef, params = nnx.split(model)
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 200, (2, T)), jnp.int32)

    def loss(p):
        logits = nnx.merge(graphdef, p)(ids)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, ids[..., None], -1)[..., 0])
    return loss, params


@pytest.mark.parametrize("policy", [p for p in REMAT_POLICIES if p != "none"])
def test_gradients_match_no_remat(policy):
    ref_loss, params = loss_fn("none")
    loss, _ = loss_fn(policy)
    ref, got = jax.grad(ref_loss)(params), jax.grad(loss)(params)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)))
    assert diff < 1e-6


@pytest.mark.parametrize("policy", ["none", "attention", "full"])
def test_unrolled_layers_match_scan(policy):
    ref_loss, params = loss_fn(policy)
    loss, _ = loss_fn(policy, scan_layers=False)
    assert abs(float(ref_loss(params)) - float(loss(params))) < 1e-6
    ref, got = jax.grad(ref_loss)(params), jax.grad(loss)(params)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)))
    assert diff < 1e-6
    assert "while" not in jax.jit(jax.grad(loss)).lower(params).as_text()  # really unrolled


def _score_residuals(policy):
    loss, params = loss_fn(policy)
    return [r for r, _ in saved_residuals(loss, params)  # float [.., T, T]: scores/probabilities
            if tuple(r.shape[-2:]) == (T, T) and jnp.issubdtype(r.dtype, jnp.floating)]


def test_attention_policy_stores_no_scores():
    assert _score_residuals("none"), "without remat the [T, T] attention probabilities are stored"
    assert not _score_residuals("attention")
