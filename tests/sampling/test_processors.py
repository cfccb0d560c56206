"""Top-p without a vocabulary sort: `nucleus_threshold` against a NumPy reference on both of its
paths (the top candidates, and the bisection when they do not decide a row), ties, masked
tokens, batch independence, and the frequencies `choose` draws with."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ledex_jax.sampling.processors import Mode, choose, nucleus_threshold, row_keys


def reference_keep(logits, top_p):
    """Token i is kept iff the probability of tokens strictly more likely than it is < top_p."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    above = np.array([[probs[r][logits[r] > x].sum() for x in logits[r]] for r in range(len(logits))])
    return above < top_p


def safe_top_p(logits, rank):
    """A top_p halfway between the masses of the `rank` and `rank + 1` most likely tokens, so
    float rounding cannot move the boundary."""
    probs = np.sort(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())[::-1]
    cum = np.cumsum(probs)
    return float((cum[rank - 1] + cum[rank]) / 2)


def kept(logits, top_p, **kw):
    threshold = nucleus_threshold(jnp.asarray(logits, jnp.float32), jnp.float32(top_p), **kw)
    return np.asarray(logits >= np.asarray(threshold))


@pytest.mark.parametrize("scale,rank", [(6.0, 3), (6.0, 40), (1.0, 300), (0.2, 1500)])
def test_threshold_matches_reference_on_both_paths(scale, rank):
    """Peaked rows are decided by the 512 candidates; flat ones (a nucleus of 1500 tokens) by
    the bisection; both give the reference's set."""
    logits = np.asarray(jax.random.normal(jax.random.key(rank), (3, 2000)), np.float64) * scale
    for row in logits:
        top_p = safe_top_p(row, rank)
        got = kept(row[None].astype(np.float32), top_p)
        want = reference_keep(row[None].astype(np.float32).astype(np.float64), top_p)
        np.testing.assert_array_equal(got, want)
        assert got.sum() == rank + 1


def test_tied_boundary_tokens_are_all_kept():
    logits = np.log(np.asarray([[0.4, 0.2, 0.2, 0.2]], np.float32))
    assert kept(logits, 0.5).tolist() == [[True, True, True, True]]  # the 0.2s tie: no sort order decides
    assert kept(logits, 0.3).tolist() == [[True, False, False, False]]
    assert kept(logits, 0.5, candidates=2).tolist() == [[True, True, True, True]]  # tie past the candidates
    # ties among the candidates of a longer row: the mass above a tied token excludes its twins
    logits = np.log(np.asarray([[0.3, 0.15, 0.15, 0.15, 0.1, 0.05, 0.05, 0.05]], np.float32))
    assert kept(logits, 0.4, candidates=6).tolist() == [[True, True, True, True, False, False, False, False]]
    assert kept(logits, 0.8, candidates=6).tolist() == [[True] * 5 + [False] * 3]
    assert kept(logits, 0.9, candidates=6).tolist() == [[True] * 8]  # decided past the candidates: bisection


def test_masked_tokens_never_kept_even_for_top_p_near_one():
    logits = np.asarray([[2.0, 1.0, -np.inf, 0.5, -np.inf, 0.0]], np.float32)
    for candidates in (2, 64):
        assert kept(logits, 0.9999, candidates=candidates).tolist() == [[True, True, False, True, False, True]]


def test_a_row_does_not_depend_on_its_batch():
    """A flat row sends the whole batch to the bisection; the peaked row's result is the same."""
    peaked = np.asarray(jax.random.normal(jax.random.key(0), (1, 5000)), np.float32) * 6
    flat = np.asarray(jax.random.normal(jax.random.key(1), (1, 5000)), np.float32) * 0.1
    alone = nucleus_threshold(jnp.asarray(peaked), 0.9)
    together = nucleus_threshold(jnp.asarray(np.concatenate([peaked, flat])), 0.9)
    assert float(alone[0, 0]) == float(together[0, 0])
    keys = jax.vmap(jax.random.wrap_key_data)(row_keys(3, jnp.arange(2)))
    token_alone, lp_alone = choose(jnp.asarray(peaked), keys[:1], Mode(use_top_p=True), 0.7, 0.9)
    token_together, lp_together = choose(jnp.asarray(np.concatenate([peaked, flat])), keys, Mode(use_top_p=True),
                                         0.7, 0.9)
    assert int(token_alone[0]) == int(token_together[0])
    np.testing.assert_allclose(lp_alone[0], lp_together[0], rtol=1e-6)


def test_top_p_draws_follow_the_renormalised_nucleus():
    probs = np.asarray([0.35, 0.25, 0.2, 0.1, 0.06, 0.04])
    logits = jnp.asarray(np.tile(np.log(probs), (20000, 1)), jnp.float32)
    keys = jax.vmap(jax.random.wrap_key_data)(row_keys(7, jnp.arange(20000)))
    tokens, logprobs = choose(logits, keys, Mode(use_top_p=True), 1.0, 0.75)  # keeps the first three
    freq = np.bincount(np.asarray(tokens), minlength=6) / 20000
    nucleus = np.where(np.arange(6) < 3, probs, 0) / probs[:3].sum()
    np.testing.assert_allclose(freq, nucleus, atol=0.015)
    np.testing.assert_allclose(logprobs, np.log(nucleus[np.asarray(tokens)]), rtol=1e-5)
