"""Sampler: agreement with the full forward pass, EOS/stop handling, seeding, compilation reuse
and sharding, on tiny random models (8 virtual CPU devices from conftest)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ledex_jax.models import build_model, get_preset
from ledex_jax.sampling import Sampler
from ledex_jax.sampling.processors import categorical, nucleus, row_keys
from ledex_jax.sampling.stop import cut_tokens
from ledex_jax.sharding import make_mesh

PROMPTS = [[1, 5, 6, 7], [1, 9], [1, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 200, 17]]
NEW = 10


class CharTokenizer:
    """Token i <-> letter i % 26 (ids 0-2 are special), enough to exercise stop strings."""
    pad_token_id, eos_token_id = 0, 2

    def encode(self, text):
        return [ord(c) - 97 + 3 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + (int(i) - 3) % 26) for i in ids if not (skip_special_tokens and int(i) < 3))


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt_bigcode"])
def model(request):
    return build_model(get_preset(request.param), seed=1)


@pytest.fixture(scope="module")
def llama():
    return build_model(get_preset("tiny_llama"), seed=2)


def reference_logprobs(model, prompts, completions, length=32):
    """log_softmax of one cache-free forward over each prompt + completion, at the completion's
    positions. Rows are right-padded to one length (one compilation); causal attention makes
    the padding invisible to earlier positions."""
    seqs = np.zeros((len(prompts), length), np.int32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        seqs[i, :len(p) + len(c)] = list(p) + list(c)
    logp = np.asarray(jax.nn.log_softmax(model(jnp.asarray(seqs)), axis=-1))
    return [logp[i, len(p) - 1:len(p) - 1 + len(c)] for i, (p, c) in enumerate(zip(prompts, completions))]


@pytest.mark.parametrize("unrolled", [True, False])
def test_greedy_matches_full_forward_argmax(model, unrolled):
    """Each greedy token is the argmax of the full forward over everything before it."""
    out = Sampler(model, max_prompt_len=16, unrolled=unrolled).generate(PROMPTS, NEW, greedy=True, eos_ids=[])
    for tokens, ref in zip(out.tokens, reference_logprobs(model, PROMPTS, out.tokens)):
        assert tokens.tolist() == ref.argmax(-1).tolist()
    assert out.lengths.tolist() == [NEW] * len(PROMPTS) and not out.stopped.any()


@pytest.mark.parametrize("unrolled", [True, False])
def test_logprobs_are_full_forward_log_softmax(model, unrolled):
    out = Sampler(model, max_prompt_len=16, unrolled=unrolled).generate(
        PROMPTS, NEW, temperature=0.7, top_k=50, eos_ids=[], seed=3)
    for tokens, raw, ref in zip(out.tokens, out.logprobs, reference_logprobs(model, PROMPTS, out.tokens)):
        np.testing.assert_allclose(raw, ref[np.arange(NEW), tokens], atol=2e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_sample_logprobs_follow_temperature(llama, temperature):
    """Both log-probabilities without top-k/top-p (at temperature 1 the loop reuses one for the other)."""
    out = Sampler(llama, max_prompt_len=16).generate(PROMPTS, NEW, temperature=temperature, eos_ids=[], seed=4)
    refs = reference_logprobs(llama, PROMPTS, out.tokens)
    for tokens, sampled, raw, ref in zip(out.tokens, out.sample_logprobs, out.logprobs, refs):
        expected = np.asarray(jax.nn.log_softmax(jnp.asarray(ref) / temperature, axis=-1))[np.arange(NEW), tokens]
        np.testing.assert_allclose(sampled, expected, atol=2e-5)
        np.testing.assert_allclose(raw, ref[np.arange(NEW), tokens], atol=2e-5)


def test_categorical_draws_follow_the_distribution():
    probs = np.array([0.5, 0.0, 0.3, 0.2], np.float32)
    logits = jnp.tile(jnp.log(jnp.asarray(probs)), (20000, 1))
    keys = row_keys(0, jnp.arange(20000))
    draws, logprobs = categorical(jax.vmap(jax.random.wrap_key_data)(keys), logits)
    draws = np.asarray(draws)
    np.testing.assert_allclose(logprobs, np.log(probs[draws]), rtol=1e-6)
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert freq[1] == 0
    np.testing.assert_allclose(freq, probs, atol=0.015)


def test_categorical_across_vocabulary_blocks():
    """Mass in several 256-token blocks (and the padded last one), zeros everywhere else."""
    probs = np.zeros(1000, np.float32)
    probs[[3, 255, 256, 777, 999]] = [0.1, 0.2, 0.3, 0.15, 0.25]
    logits = jnp.tile(jnp.log(jnp.asarray(probs)), (20000, 1))
    keys = row_keys(1, jnp.arange(20000))
    draws, logprobs = categorical(jax.vmap(jax.random.wrap_key_data)(keys), logits)
    freq = np.bincount(np.asarray(draws), minlength=1000) / 20000
    assert freq[probs == 0].sum() == 0
    np.testing.assert_allclose(freq, probs, atol=0.015)
    np.testing.assert_allclose(logprobs, np.log(probs[np.asarray(draws)]), rtol=1e-5)


def test_top_k_1_and_tiny_top_p_equal_greedy(llama):
    sampler = Sampler(llama, max_prompt_len=16)
    greedy = sampler.generate(PROMPTS, NEW, greedy=True, eos_ids=[])
    top1 = sampler.generate(PROMPTS, NEW, temperature=1.3, top_k=1, eos_ids=[], seed=5)
    nucleus_only = sampler.generate(PROMPTS, NEW, temperature=1.3, top_p=1e-6, eos_ids=[], seed=5)
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)
    np.testing.assert_array_equal(nucleus_only.tokens, greedy.tokens)
    np.testing.assert_allclose(top1.sample_logprobs, 0.0, atol=1e-6)  # one candidate: probability 1
    np.testing.assert_allclose(top1.logprobs, greedy.logprobs, atol=1e-6)


def test_nucleus_keeps_smallest_prefix_reaching_top_p():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(np.asarray(nucleus(logits, 0.75)))
    assert kept.tolist() == [[True, True, False, False]]
    assert np.isfinite(np.asarray(nucleus(logits, 0.85))).tolist() == [[True, True, True, False]]


def test_eos_stops_rows_with_right_lengths(llama):
    sampler = Sampler(llama, max_prompt_len=16)
    free = sampler.generate(PROMPTS, NEW, greedy=True, eos_ids=[])
    eos = int(free.tokens[0, 3])  # row 0 emits this at step 3 (maybe earlier too)
    out = sampler.generate(PROMPTS, NEW, greedy=True, eos_ids=[eos, 255])
    for row, tokens in enumerate(free.tokens):
        hits = np.flatnonzero(np.isin(tokens, [eos, 255]))
        n = hits[0] + 1 if hits.size else NEW
        assert out.lengths[row] == n and out.stopped[row] == bool(hits.size)
        assert out.tokens[row, :n].tolist() == tokens[:n].tolist()
        assert (out.tokens[row, n:] == sampler.pad_id).all() and (out.logprobs[row, n:] == 0).all()
    assert out.lengths[0] <= 4 and out.stopped[0]


def test_stop_strings_truncate_across_chunks(llama):
    tok = CharTokenizer()
    sampler = Sampler(llama, tok, max_prompt_len=16, chunk_size=3)
    free = sampler.generate(PROMPTS, 16, greedy=True, eos_ids=[])
    stop = free.texts[1][5:7]  # completed by token 6 of row 1 at the latest
    out = sampler.generate(PROMPTS, 16, greedy=True, eos_ids=[], stop=[stop])
    for row, text in enumerate(free.texts):
        at = text.find(stop)
        if at < 0:
            assert out.texts[row] == text and out.lengths[row] == 16 and not out.stopped[row]
        else:
            assert out.texts[row] == text[:at] and out.stopped[row]
            n = out.lengths[row]
            assert stop in tok.decode(free.tokens[row, :n]) and stop not in tok.decode(free.tokens[row, :n - 1])
    assert out.lengths[1] <= 7


def test_cut_tokens_finds_the_completing_token():
    decode = lambda ids: "".join(ids)
    assert cut_tokens(list("abcxyzd"), ["xy"], decode) == 5
    assert cut_tokens(list("abc"), ["xy"], decode) == 3


def test_seeded_and_independent_of_batch_composition(llama):
    sampler = Sampler(llama, max_prompt_len=16)
    kw = dict(temperature=1.0, top_p=0.9, eos_ids=[])
    a = sampler.generate(PROMPTS, NEW, seed=7, **kw)
    b = sampler.generate(PROMPTS, NEW, seed=7, **kw)
    c = sampler.generate(PROMPTS, NEW, seed=8, **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert (a.tokens != c.tokens).any()
    # row 2 alone (same row id, same bucket) draws the same tokens as inside the batch
    alone = sampler.generate([PROMPTS[2]], NEW, seed=7, row_ids=[2], **kw)
    np.testing.assert_array_equal(alone.tokens[0], a.tokens[2])
    grouped_sampler = Sampler(llama, max_prompt_len=16, max_batch=3)
    grouped = grouped_sampler.generate(PROMPTS, NEW, seed=7, **kw)
    np.testing.assert_array_equal(grouped.tokens, a.tokens)
    assert grouped_sampler.traces["prefill"] == 2  # 3 prompts, then the last one alone (not padded to 3)
    chunked = Sampler(llama, max_prompt_len=16, chunk_size=3).generate(PROMPTS, NEW, seed=7, progress=True, **kw)
    np.testing.assert_array_equal(chunked.tokens, a.tokens)


def test_device_calls_take_prompts_of_similar_length(llama):
    """Groups are formed by prompt length (two short prompts in bucket 16, two long in 32, not
    two calls at 32), and the results come back in the caller's order, as from one call."""
    prompts = [[1] + list(range(3, 32)), [1, 5, 6], [1] + list(range(40, 67)), [1, 9, 9, 4]]
    kw = dict(temperature=1.0, top_p=0.9, eos_ids=[], seed=4, n=2)
    whole = Sampler(llama, max_prompt_len=32).generate(prompts, NEW, **kw)
    sampler = Sampler(llama, max_prompt_len=32, max_batch=4)
    grouped = sampler.generate(prompts, NEW, **kw)
    np.testing.assert_array_equal(grouped.tokens, whole.tokens)
    np.testing.assert_array_equal(grouped.prompt_ids, whole.prompt_ids)
    np.testing.assert_allclose(grouped.logprobs, whole.logprobs, atol=1e-5)
    assert sampler.traces["prefill"] == 2 and sampler.bucket(4) == 16 and sampler.bucket(30) == 32


def test_second_call_in_same_bucket_does_not_recompile(llama):
    sampler = Sampler(llama, max_prompt_len=64)
    sampler.generate(PROMPTS, NEW, temperature=0.8, top_p=0.9, eos_ids=[2], seed=0)
    traces, sizes = dict(sampler.traces), (sampler.prefill_fn._cache_size(), sampler.decode_fn._cache_size())
    other = [[1, 4, 4], [1, 2, 3, 4, 5, 6], [7], [9, 9, 9, 9, 9]]  # same bucket (16), same batch
    sampler.generate(other, NEW, temperature=1.1, top_p=0.5, eos_ids=[3, 4], seed=9)
    assert dict(sampler.traces) == traces
    assert (sampler.prefill_fn._cache_size(), sampler.decode_fn._cache_size()) == sizes
    sampler.update_params(build_model(get_preset("tiny_llama"), seed=9))  # new weights, same program
    sampler.generate(other, NEW, temperature=1.1, top_p=0.5, eos_ids=[3, 4], seed=9)
    assert dict(sampler.traces) == traces
    sampler.generate([[1] * 20] * 4, NEW, temperature=0.8, top_p=0.9, eos_ids=[])  # next bucket: compiles
    assert sampler.traces["decode"] == traces["decode"] + 1


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2)])
def test_sharded_equals_unsharded(llama, shape):
    prompts = PROMPTS * 2
    kw = dict(temperature=0.9, top_k=40, eos_ids=[], seed=11)
    ref = Sampler(llama, max_prompt_len=16).generate(prompts, NEW, **kw)
    out = Sampler(llama, max_prompt_len=16, mesh=make_mesh(shape)).generate(prompts, NEW, **kw)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)


def test_errors_name_the_fix(llama):
    sampler = Sampler(llama, max_prompt_len=8)
    with pytest.raises(ValueError, match="max_prompt_len"):
        sampler.generate([[1] * 9], 4)
    with pytest.raises(ValueError, match="tokenizer"):
        sampler.generate([[1]], 4, stop=["x"])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        sampler.generate([[1]], 300)
