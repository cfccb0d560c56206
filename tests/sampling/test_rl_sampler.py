"""The sampler as an RL component: stop strings before an EOS, weights from a train step that
donates its buffers, the rescoring layout, n samples per prompt from one prefill, and stop
strings checked on new tokens only."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ledex_jax.models import build_model, get_preset
from ledex_jax.sampling import Sampler
from ledex_jax.sampling.stop import StopWatch
from ledex_jax.sharding import make_mesh

PROMPTS = [[1, 5, 6, 7], [1, 9], [1, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 200, 17]]


class CharTokenizer:
    """Token i <-> letter i % 26 (ids 0-2 are special); counts the tokens it decodes."""
    pad_token_id, eos_token_id = 0, 2

    def __init__(self):
        self.decoded = 0

    def encode(self, text):
        return [ord(c) - 97 + 3 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        self.decoded += len(ids)
        return "".join(chr(97 + (int(i) - 3) % 26) for i in ids if not (skip_special_tokens and int(i) < 3))


@pytest.fixture(scope="module")
def llama():
    return build_model(get_preset("tiny_llama"), seed=2)


def test_eos_after_a_stop_string_cuts_tokens_with_the_text(llama):
    """A row that completes a stop string and then reaches EOS inside the same chunk is cut after
    the stop string: tokens, log-probs and length agree with the text."""
    tok = CharTokenizer()
    sampler = Sampler(llama, tok, max_prompt_len=16, chunk_size=64)
    free = sampler.generate(PROMPTS, 12, greedy=True, eos_ids=[])
    # a row and an EOS id that first appears at column 6, after a two-letter stop string at 2..3
    row = next(i for i, t in enumerate(free.tokens) if t[6] not in t[:6] and tok.decode(t[2:4]) not in tok.decode(t[:3]))
    t = free.tokens[row]
    stop = tok.decode(t[2:4])
    out = sampler.generate([PROMPTS[row]], 12, greedy=True, eos_ids=[int(t[6])], stop=[stop])
    assert out.stopped[0] and out.lengths[0] == 4
    assert out.texts[0] == tok.decode(t[:2])
    np.testing.assert_array_equal(out.tokens[0, :4], t[:4])
    assert (out.tokens[0, 4:] == sampler.pad_id).all() and (out.logprobs[0, 4:] == 0).all()
    np.testing.assert_allclose(out.logprobs[0, :4], free.logprobs[row, :4], atol=1e-6)


def _sgd_step(graphdef):
    def step(params, ids):
        def loss(p):
            logits = nnx.merge(graphdef, p)(ids)
            return -jnp.mean(jax.nn.log_softmax(logits)[:, :-1].max(-1))
        grads = jax.grad(loss)(params)
        return jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    return jax.jit(step, donate_argnums=0)


@pytest.mark.parametrize("mesh_shape", [None, (2, 2, 2)])
def test_update_params_survives_donating_train_steps(llama, mesh_shape):
    """train step -> update -> generate -> train step (donating its input) -> generate: no
    deleted-buffer error, the new weights are used, nothing recompiles."""
    graphdef, params = nnx.split(llama, nnx.Param)
    params = jax.tree.map(jnp.copy, params)
    step = _sgd_step(graphdef)
    ids = jnp.asarray([[1, 5, 6, 7, 8, 9, 10, 11]] * 4, jnp.int32)
    mesh = None if mesh_shape is None else make_mesh(mesh_shape)
    params = step(params, ids)
    sampler = Sampler(nnx.merge(graphdef, params), max_prompt_len=16, mesh=mesh)
    first = sampler.generate(PROMPTS, 8, greedy=True, eos_ids=[])
    traces = dict(sampler.traces)
    for _ in range(2):
        old = params
        params = step(params, ids)  # donates `old`
        assert jax.tree.leaves(old)[0].is_deleted()
        sampler.generate(PROMPTS, 8, greedy=True, eos_ids=[])  # the sampler's own copy survives
        sampler.update_params((graphdef, params))
        got = sampler.generate(PROMPTS, 8, greedy=True, eos_ids=[])
        want = Sampler(nnx.merge(graphdef, jax.tree.map(jnp.copy, params)), max_prompt_len=16).generate(
            PROMPTS, 8, greedy=True, eos_ids=[])
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
    assert not np.array_equal(got.logprobs, first.logprobs)  # the weights really changed
    assert dict(sampler.traces) == traces


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt_bigcode"])
def test_rescoring_layout_gives_the_sampler_log_probs(name):
    """`target_log_probs` on [prompt | completion] (prompts of two buckets, EOS-ended rows)
    equals the sampler's log-probs at temperature 1."""
    model = build_model(get_preset(name), seed=3)
    prompts = PROMPTS + [[1] + list(range(20, 40))]  # a longer prompt: another bucket in its own group
    out = Sampler(model, max_prompt_len=32, max_batch=3).generate(prompts, 10, temperature=1.0, seed=5,
                                                                    eos_ids=[17, 40])
    batch = out.rescoring_batch()
    assert batch.input_ids.shape == (5, out.prompt_ids.shape[1] + 10) and out.prompt_ids.shape[1] == 24
    log_probs = np.asarray(model.target_log_probs(jnp.asarray(batch.input_ids), jnp.asarray(batch.targets),
                                                  jnp.asarray(batch.attention_mask), positions=jnp.asarray(batch.positions)))
    got = batch.completion_columns(log_probs * batch.target_mask)
    np.testing.assert_allclose(got, out.logprobs, atol=2e-5)
    np.testing.assert_array_equal(batch.completion_columns(batch.target_mask).sum(1), out.lengths)


def test_n_samples_prefill_each_prompt_once(llama):
    """generate(prompts, n=3) samples exactly as the prompts repeated 3 times, with one prefill
    row per prompt."""
    sampler = Sampler(llama, max_prompt_len=16)
    prefilled = []
    real = sampler._prefill
    sampler._prefill = lambda *a, **k: prefilled.append(a[2].shape[0]) or real(*a, **k)
    kw = dict(temperature=1.0, seed=11, eos_ids=[5])
    out = sampler.generate(PROMPTS, 9, n=3, **kw)
    assert prefilled == [len(PROMPTS)]
    repeated = Sampler(llama, max_prompt_len=16).generate([p for p in PROMPTS for _ in range(3)], 9, **kw)
    np.testing.assert_array_equal(out.tokens, repeated.tokens)
    np.testing.assert_allclose(out.logprobs, repeated.logprobs, atol=1e-6)
    np.testing.assert_array_equal(out.prompt_ids, repeated.prompt_ids)
    assert len(set(map(tuple, out.tokens[:3]))) > 1  # the samples of one prompt differ
    grouped = Sampler(llama, max_prompt_len=16, max_batch=6).generate(PROMPTS, 9, n=3, **kw)
    np.testing.assert_array_equal(grouped.tokens, out.tokens)
    with pytest.raises(ValueError, match="n=0"):
        sampler.generate(PROMPTS, 4, n=0)


def test_stop_watch_decodes_new_tokens_only():
    """Each check decodes the tokens added since the last one plus a fixed overlap, and still
    finds a stop string that spans two checks."""
    tok = CharTokenizer()
    tokens = np.asarray([[3 + (i % 20) for i in range(200)]], np.int32)  # a..t repeated, no "xyz"
    tokens[0, 150:153] = [3 + 23, 3 + 24, 3 + 25]  # "xyz" at 150
    watch = StopWatch(["xyz"], tok.decode, 1)
    hits = []
    for n in range(8, 201, 8):  # chunks of 8 tokens: "xyz" spans the check at 152
        hits.append(bool(watch.check(tokens, np.asarray([n]), np.asarray([False]))[0]))
    assert hits.index(True) == 152 // 8 and sum(hits[:19]) == 0
    assert tok.decoded <= 25 * (8 + watch.overlap)  # ~linear in the completion, not quadratic


def test_sampler_stop_checks_are_incremental(llama):
    tok = CharTokenizer()
    sampler = Sampler(llama, tok, max_prompt_len=16, chunk_size=4)
    before_finish = []
    real = sampler._finish
    sampler._finish = lambda *a: before_finish.append(tok.decoded) or real(*a)
    sampler.generate(PROMPTS, 64, temperature=1.0, seed=3, eos_ids=[], stop=["qqqqqqqq"])
    full_redecode = len(PROMPTS) * sum(range(4, 65, 4))  # what decoding whole completions each chunk costs
    assert before_finish[0] <= len(PROMPTS) * 16 * (4 + 2 * 8 + 4) < full_redecode
