"""Shared-prefix prefill: the plan (which prompts share what) and the sampler taking it, whose
tokens must be the plain prefill's."""
import numpy as np
import pytest

from ledex_jax.models import build_model, get_preset
from ledex_jax.sampling import Sampler
from ledex_jax.sampling.prefix import block_width, call_order, common_length, plan_prefixes, prefix_clusters
from ledex_jax.sharding import make_mesh

rng = np.random.default_rng(0)
PROBLEM_A = [1] + rng.integers(3, 250, 30).tolist()   # two "problems", each asked about twice
PROBLEM_B = [1] + rng.integers(3, 250, 22).tolist()
PROMPTS = [PROBLEM_A + [7, 8, 9], PROBLEM_B + rng.integers(3, 250, 9).tolist(), PROBLEM_A + [7, 11],
           [1, 5, 6, 7], PROBLEM_B + [4] * 12]
NEW = 8


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt_bigcode"])
def model(request):
    return build_model(get_preset(request.param), seed=1)


def test_clusters_save_the_most_tokens_and_keep_a_token_each():
    clusters = {tuple(sorted(m)): n for m, n in prefix_clusters(PROMPTS, min_shared=8)}
    assert clusters == {(0, 2): 32, (1, 4): 23}  # A + [7] (longest shared), B (its 23 tokens)
    # one prompt is another's beginning: the shorter keeps its last token
    assert prefix_clusters([[1, 2, 3, 4], [1, 2, 3, 4, 5]], 2) == [([0, 1], 3)]
    # every prompt shares [1, 2] but pairs share 10: two clusters save 2 x 9, one would save 3 x 2
    pairs = [[1, 2] + [3] * 8 + [9], [1, 2] + [3] * 8 + [8], [1, 2] + [4] * 8 + [9], [1, 2] + [4] * 8 + [8]]
    assert sorted((sorted(m), n) for m, n in prefix_clusters(pairs, 2)) == [([0, 1], 10), ([2, 3], 10)]
    assert prefix_clusters(pairs, 11) == [] and common_length([1, 2, 3], [1, 2, 4, 5]) == 2


def test_plan_rebuilds_every_prompt():
    plan = plan_prefixes(PROMPTS, min_shared=8, samples=2, plain_width=48, bucket=block_width,
                         prefix_rows=lambda u: 4, pad_id=0)
    assert plan.prefix_ids.shape == (4, 32) and plan.rest_ids.shape == (5, 16) and plan.width == 48
    for i, seq in enumerate(PROMPTS):
        p = plan.row_prefix[i]
        rebuilt = plan.prefix_ids[p][plan.prefix_mask[p] == 1].tolist() + plan.rest_ids[i][plan.rest_mask[i] == 1].tolist()
        assert rebuilt == seq
    assert plan.row_prefix[3] == 0 and plan.prefix_mask[0].sum() == 0  # [1, 5, 6, 7] shares nothing
    # nothing shared, or too little to pay for the second block: the plain layout
    assert plan_prefixes([[1, 2, 3], [4, 5, 6]], min_shared=1, samples=1, plain_width=16, bucket=block_width,
                         prefix_rows=lambda u: u, pad_id=0) is None
    assert plan_prefixes(PROMPTS, min_shared=8, samples=2, plain_width=40, bucket=lambda n: 64,
                         prefix_rows=lambda u: 4, pad_id=0) is None


def test_block_widths_and_call_order():
    assert [block_width(n) for n in (1, 16, 17, 21, 200, 400, 600)] == [16, 16, 20, 24, 224, 448, 640]
    order = call_order(PROMPTS, 8).tolist()
    assert order == [3, 2, 0, 1, 4]  # by length, each cluster together at its longest member
    assert call_order(PROMPTS, 0).tolist() == [3, 1, 2, 0, 4]


@pytest.mark.parametrize("unrolled", [True, False])
def test_shared_prefill_draws_the_plain_prefills_tokens(model, unrolled):
    kw = dict(temperature=0.9, top_p=0.95, eos_ids=[], seed=5, n=2)
    plain = Sampler(model, max_prompt_len=64, unrolled=unrolled).generate(PROMPTS, NEW, **kw)
    sampler = Sampler(model, max_prompt_len=64, unrolled=unrolled, shared_prefix=8)
    shared = sampler.generate(PROMPTS, NEW, **kw)
    assert sampler.traces["prefill_shared"] == 1 and sampler.traces["prefill"] == 0
    np.testing.assert_array_equal(shared.tokens, plain.tokens)
    np.testing.assert_allclose(shared.logprobs, plain.logprobs, atol=2e-5)
    np.testing.assert_array_equal(shared.prompt_ids, plain.prompt_ids)  # the rescoring layout is unchanged
    greedy = sampler.generate(PROMPTS, NEW, greedy=True, eos_ids=[])
    np.testing.assert_array_equal(greedy.tokens, Sampler(model, max_prompt_len=64, unrolled=unrolled).generate(
        PROMPTS, NEW, greedy=True, eos_ids=[]).tokens)


def test_shared_prefill_in_several_calls_and_sharded():
    llama = build_model(get_preset("tiny_llama"), seed=2)
    prompts = PROMPTS * 2 + [[1, 3, 3]]
    kw = dict(temperature=1.0, top_k=40, eos_ids=[], seed=11)
    plain = Sampler(llama, max_prompt_len=64).generate(prompts, NEW, **kw)
    grouped = Sampler(llama, max_prompt_len=64, max_batch=4, shared_prefix=8)
    np.testing.assert_array_equal(grouped.generate(prompts, NEW, **kw).tokens, plain.tokens)
    assert grouped.traces["prefill_shared"] >= 1
    sharded = Sampler(llama, max_prompt_len=64, mesh=make_mesh((2, 2, 2)), shared_prefix=8)
    out = sharded.generate(prompts, NEW, **kw)
    np.testing.assert_array_equal(out.tokens, plain.tokens)
    np.testing.assert_allclose(out.logprobs, plain.logprobs, atol=2e-5)
    assert sharded.traces["prefill_shared"] == 1


def test_shared_prefix_must_not_be_negative():
    with pytest.raises(ValueError, match="shared_prefix"):
        Sampler(build_model(get_preset("tiny_llama"), seed=2), shared_prefix=-1)
