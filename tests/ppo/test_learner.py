"""The learner's contracts: the same step on 8 devices as on one, unscorable rows counted and
never trained on, the sampler reading new weights without recompiling, and overlap measured."""
import concurrent.futures

import jax
import pytest
import numpy as np
import optax

from ledex_jax.models import build_model, get_preset
from ledex_jax.ppo.learner import PPOLearner, RewardBatch
from ledex_jax.ppo.policy import with_value_head
from ledex_jax.sharding import DEFAULT_RULES, make_mesh
from tests.ppo import toys

PROMPTS = [list(np.random.default_rng(i).integers(3, 16, size=3 + i % 3)) for i in range(8)]


def learner_on(mesh_shape, devices):
    cfg = get_preset("tiny_llama").replace(vocab_size=16, max_position_embeddings=64, bos_token_id=1,
                                           eos_token_id=2, pad_token_id=0, num_heads=4, num_kv_heads=2)
    mesh = make_mesh(mesh_shape, devices=jax.devices()[:devices])
    ppo = toys.ppo_settings(minibatch_size=4, epochs=2, forward_batch_size=4)
    return PPOLearner(with_value_head(build_model(cfg, 0), 0), optax.adam(1e-2), mesh, DEFAULT_RULES, ppo, 8,
                      sampler_args=dict(max_prompt_len=8))


def params_of(learner):
    return [np.asarray(x) for x in jax.tree.leaves(learner.state.params)]


def test_step_on_eight_devices_equals_one():
    score = toys.counting_reward(5, 7, split=3)
    results = []
    for shape, n in (((1, 1, 1), 1), ((2, 2, 2), 8)):
        learner = learner_on(shape, n)
        out = learner.generate(PROMPTS, seed=3, max_new_tokens=6, eos_ids=[])
        metrics = learner.step(out, score, seed=3)
        results.append((out.tokens, metrics, params_of(learner)))
    (t1, m1, p1), (t8, m8, p8) = results
    np.testing.assert_array_equal(t1, t8)  # row-keyed sampling: same tokens on any mesh
    assert learner.trim_widths(48) == (16, 24, 32, 48)  # micro-batches of 4 rows over 4 batch shards
    learner.grad_accum_steps = 2  # 2 rows over 4 shards: cut micro-batches would not split evenly
    assert learner.trim_widths(48) == (48,)
    for key in ("reward", "kl", "policy_loss", "value_loss"):
        assert abs(m1[key] - m8[key]) < 1e-4, (key, m1[key], m8[key])
    for a, b in zip(p1, p8):
        np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.fixture(scope="module")
def learner():
    """One single-device learner shared by the tests below (each takes its own steps)."""
    return learner_on((1, 1, 1), 1)


def test_unscorable_rows_are_counted_and_not_trained_on(learner):
    executor = concurrent.futures.ThreadPoolExecutor(1)
    nan_rows = np.array([0, 5])

    def score(out):
        code = np.ones(len(out.tokens))
        code[nan_rows] = np.nan
        return executor.submit(lambda: RewardBatch(code, np.full(len(code), np.nan), np.full(len(code), -1)))

    out = learner.generate(PROMPTS, seed=0, max_new_tokens=6, eos_ids=[])
    metrics = learner.step(out, score, seed=0)
    assert metrics["skipped_rows"] == 2 and metrics["reward"] == 1.0
    assert all(np.isfinite(p).all() for p in params_of(learner))

    def all_nan(out):
        return executor.submit(lambda: RewardBatch(np.full(8, np.nan), np.full(8, np.nan), np.full(8, -1)))
    before = params_of(learner)
    metrics = learner.step(learner.generate(PROMPTS, seed=1, max_new_tokens=6, eos_ids=[]), all_nan, seed=1)
    assert metrics["skipped_rows"] == 8 and np.isnan(metrics["reward"])
    for a, b in zip(before, params_of(learner)):  # nothing to learn from: the weights did not move
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_sampler_follows_the_policy_without_recompiling(learner):
    score = toys.counting_reward(5, 7, split=3)
    learner.step(learner.generate(PROMPTS, seed=0, max_new_tokens=6, eos_ids=[]), score, seed=0)
    traces = dict(learner.sampler.traces)
    out = learner.generate(PROMPTS, seed=1, max_new_tokens=6, eos_ids=[])
    assert dict(learner.sampler.traces) == traces
    # the sampler's log-probs are the policy's current ones on the same [prompt | response] rows
    from ledex_jax.ppo.policy import response_hidden, response_log_probs
    rb = out.rescoring_batch()
    lm = learner.lm()
    hidden, tokens = response_hidden(lm, rb.input_ids, rb.attention_mask, rb.positions, out.tokens.shape[1])
    np.testing.assert_allclose(np.asarray(response_log_probs(lm, hidden, tokens)), out.logprobs, atol=2e-4)
    assert 0.0 <= learner.step(out, score, seed=1)["scoring_hidden"] <= 1.0


def test_micro_batches_cut_to_their_prompts_width_give_the_same_step():
    """Prompts of 3 to 40 tokens: with trim_prompts the rescoring and every update run on
    micro-batches of similar length at a few narrower widths; the statistics, metrics and the
    new weights are those of the one-width step."""
    prompts = [list(np.random.default_rng(i).integers(3, 16, size=n)) for i, n in
               enumerate([3, 30, 5, 22, 40, 4, 20, 6])]
    score = toys.counting_reward(5, 7, split=3)
    results = []
    for trim in (False, True):
        cfg = get_preset("tiny_llama").replace(vocab_size=16, max_position_embeddings=64, bos_token_id=1,
                                               eos_token_id=2, pad_token_id=0)
        ppo = toys.ppo_settings(minibatch_size=4, epochs=2, forward_batch_size=2, trim_prompts=trim)
        learner = PPOLearner(with_value_head(build_model(cfg, 0), 0), optax.adam(1e-2),
                             make_mesh((1, 1, 1), devices=jax.devices()[:1]), DEFAULT_RULES, ppo, 8,
                             sampler_args=dict(max_prompt_len=48), grad_accum_steps=2)
        out = learner.generate(prompts, seed=3, max_new_tokens=6, eos_ids=[])
        assert out.prompt_ids.shape[1] == 48
        metrics = learner.step(out, score, seed=3)
        results.append((metrics, params_of(learner), learner))
    (m_full, p_full, full), (m_cut, p_cut, cut) = results
    assert not full._grouped and cut._grouped["stats", 6]._cache_size() == 3  # widths 16, 24 and 48
    for key in ("reward", "kl", "entropy", "policy_loss", "value_loss", "clipfrac", "approx_kl", "grad_norm"):
        assert abs(m_full[key] - m_cut[key]) < 1e-5 * max(1.0, abs(m_full[key])), (key, m_full[key], m_cut[key])
    for a, b in zip(p_full, p_cut):
        np.testing.assert_allclose(a, b, atol=2e-5)
