"""PPO losses and diagnostics against per-token NumPy loops (TRL v0.8.6 semantics)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ledex_jax.ppo.losses import (entropy_from_logits, explained_variance, kl_penalty, policy_loss, ratio_sum,
                                  value_loss)

SHAPES = [(5, 9), (3, 16)]  # a few [B, T], so seeds reuse compiled ops and the folder stays fast


def _random_batch(seed):
    rng = np.random.default_rng(seed)
    B, T = SHAPES[seed % len(SHAPES)]
    lengths = rng.integers(0, T + 1, B)
    lengths[0] = 0
    lengths[1] = T
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
    old = rng.normal(-2.0, 1.0, (B, T)).astype(np.float32)
    new = (old + rng.normal(0.0, 0.4, (B, T))).astype(np.float32)  # ratios from ~0.3 to ~3: plenty clipped
    adv = rng.normal(size=(B, T)).astype(np.float32)
    values = rng.normal(size=(B, T)).astype(np.float32)
    old_values = (values + rng.normal(0.0, 0.4, (B, T))).astype(np.float32)
    returns = rng.normal(size=(B, T)).astype(np.float32)
    garbage = [np.nan, np.inf, -np.inf]
    for arr in (old, new, adv, values, old_values, returns):
        arr[mask == 0] = garbage[seed % 3]
    return dict(mask=mask, old=old, new=new, adv=adv, values=values, old_values=old_values, returns=returns)


def _tokens(mask):
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]


def _ref_policy(d, c):
    total, clipped = 0.0, 0
    for b, t in _tokens(d["mask"]):
        ratio = np.exp(float(d["new"][b, t]) - float(d["old"][b, t]))
        a = float(d["adv"][b, t])
        l1 = -a * ratio
        l2 = -a * min(max(ratio, 1 - c), 1 + c)
        total += max(l1, l2)
        clipped += l2 > l1
    return total, len(_tokens(d["mask"])), clipped


def _ref_value(d, c):
    total, clipped = 0.0, 0
    for b, t in _tokens(d["mask"]):
        v, o, r = (float(d[k][b, t]) for k in ("values", "old_values", "returns"))
        l1 = (v - r) ** 2
        l2 = (min(max(v, o - c), o + c) - r) ** 2
        total += 0.5 * max(l1, l2)
        clipped += l2 > l1
    return total, len(_tokens(d["mask"])), clipped


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cliprange", [0.2, 0.05])
def test_policy_loss_matches_loop(seed, cliprange):
    d = _random_batch(seed)
    want = _ref_policy(d, cliprange)
    args = (d["new"], d["old"], d["adv"], d["mask"], cliprange)
    for got in (policy_loss(*args), jax.jit(policy_loss)(*args)):
        assert all(g.dtype == jnp.float32 for g in got)
        np.testing.assert_allclose([float(g) for g in got], want, rtol=1e-5, atol=1e-5)
    assert want[2] > 0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cliprange_value", [0.2, 0.05])
def test_value_loss_matches_loop(seed, cliprange_value):
    d = _random_batch(seed)
    want = _ref_value(d, cliprange_value)
    args = (d["values"], d["old_values"], d["returns"], d["mask"], cliprange_value)
    for got in (value_loss(*args), jax.jit(value_loss)(*args)):
        np.testing.assert_allclose([float(g) for g in got], want, rtol=1e-5, atol=1e-5)
    assert want[2] > 0


def test_losses_accumulate_exactly_over_microbatches():
    d = _random_batch(1)
    whole = policy_loss(d["new"], d["old"], d["adv"], d["mask"], 0.2)
    parts = [policy_loss(d["new"][s], d["old"][s], d["adv"][s], d["mask"][s], 0.2)
             for s in (slice(0, 2), slice(2, None))]
    np.testing.assert_allclose([sum(float(p[i]) for p in parts) for i in range(3)], [float(w) for w in whole],
                               rtol=1e-5, atol=1e-5)


def test_gradients_finite_and_zero_where_clipped():
    d = _random_batch(0)  # NaN on padding
    m = d["mask"] > 0

    def pg(lp):
        return policy_loss(lp, d["old"], d["adv"], d["mask"], 0.2)[0]

    grad = np.asarray(jax.grad(pg)(jnp.asarray(d["new"])))
    assert np.all(np.isfinite(grad)) and np.all(grad[~m] == 0)
    ratio = np.exp(d["new"] - d["old"])
    pinned = m & (((d["adv"] > 0) & (ratio > 1.2)) | ((d["adv"] < 0) & (ratio < 0.8)))
    assert pinned.any() and np.all(grad[pinned] == 0)
    free = m & ~pinned & (np.abs(d["adv"]) > 1e-3)
    for b, t in zip(*np.nonzero(free)):
        assert grad[b, t] == pytest.approx(-d["adv"][b, t] * ratio[b, t], rel=1e-4)
    vf = lambda v: value_loss(v, d["old_values"], d["returns"], d["mask"], 0.2)[0]  # noqa: E731
    vgrad = jax.grad(vf)(jnp.asarray(d["values"]))
    assert np.all(np.isfinite(np.asarray(vgrad)))


@pytest.mark.parametrize("seed", range(3))
def test_ratio_sum(seed):
    d = _random_batch(seed)
    toks = _tokens(d["mask"])
    want = sum(np.exp(float(d["new"][b, t]) - float(d["old"][b, t])) for b, t in toks)
    got = jax.jit(ratio_sum)(d["new"], d["old"], d["mask"])
    np.testing.assert_allclose([float(g) for g in got], [want, len(toks)], rtol=1e-5, atol=1e-5)


def _np_log_softmax(row):
    row = row.astype(np.float64)
    mx = max(row)
    lse = mx + np.log(sum(np.exp(v - mx) for v in row))
    return row - lse


@pytest.mark.parametrize("seed", range(3))
def test_kl_penalty_kinds(seed):
    rng = np.random.default_rng(seed)
    B, T, V = 3, 5, 11
    logits = rng.normal(0, 3, (B, T, V)).astype(np.float32)
    ref_logits = (logits + rng.normal(0, 1, (B, T, V))).astype(np.float32)
    lp = rng.normal(-2, 1, (B, T)).astype(np.float32)
    ref = rng.normal(-2, 1, (B, T)).astype(np.float32)
    want = {k: np.zeros((B, T)) for k in ("kl", "abs", "mse", "full")}
    for b in range(B):
        for t in range(T):
            diff = float(lp[b, t]) - float(ref[b, t])
            want["kl"][b, t], want["abs"][b, t], want["mse"][b, t] = diff, abs(diff), 0.5 * diff * diff
            p, q = _np_log_softmax(logits[b, t]), _np_log_softmax(ref_logits[b, t])
            want["full"][b, t] = sum(np.exp(p[v]) * (p[v] - q[v]) for v in range(V))
    for kind, w in want.items():
        got = kl_penalty(lp, ref, kind, logits=logits, ref_logits=ref_logits)
        assert got.shape == (B, T) and got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), w, rtol=1e-5, atol=1e-5)
        jitted = jax.jit(kl_penalty, static_argnames="kind")(lp, ref, kind=kind, logits=logits, ref_logits=ref_logits)
        np.testing.assert_allclose(np.asarray(jitted), w, rtol=1e-5, atol=1e-5)
    assert np.all(want["full"] >= 0)
    np.testing.assert_allclose(np.asarray(kl_penalty(None, None, "full", logits, logits)), 0.0, atol=1e-6)


def test_kl_penalty_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="kl, abs, mse, full"):
        kl_penalty(x, x, "reverse")
    with pytest.raises(ValueError, match="logits"):
        kl_penalty(x, x, "full")


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_entropy_from_logits(scale):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(2, 4, 9)) * scale).astype(np.float32)
    want = np.zeros((2, 4))
    for b in range(2):
        for t in range(4):
            lp = _np_log_softmax(logits[b, t])
            want[b, t] = -sum(np.exp(v) * v for v in lp)
    got = entropy_from_logits(logits)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(np.asarray(entropy_from_logits(np.zeros((1, 1, 8)))), [[np.log(8)]], rtol=1e-6)
    bf16 = entropy_from_logits(jnp.asarray(logits, jnp.bfloat16))
    assert bf16.dtype == jnp.float32


@pytest.mark.parametrize("seed", range(3))
def test_explained_variance(seed):
    d = _random_batch(seed)
    toks = _tokens(d["mask"])
    r = np.array([float(d["returns"][b, t]) for b, t in toks])
    v = np.array([float(d["values"][b, t]) for b, t in toks])
    want = 1 - np.var(r - v) / np.var(r)
    assert float(jax.jit(explained_variance)(d["values"], d["returns"], d["mask"])) == pytest.approx(want, rel=1e-4)
    m = d["mask"]
    assert float(explained_variance(d["returns"], d["returns"], m)) == pytest.approx(1.0)
    assert np.isnan(float(explained_variance(d["values"], np.ones_like(d["returns"]), m)))
