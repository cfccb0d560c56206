"""The seqio/TF SFT pipeline end to end: batch format, exact loss masks, packing that leaves the
model's per-token losses unchanged, deterministic order, resume, host shards, length policy,
the TFDS source and config errors. One process: TF is imported once."""
import logging
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from flax import nnx

from ledex_jax.data import prompts as P
from ledex_jax.data.records import read_sft_jsonl
from ledex_jax.data.seqio_tasks import SFTFeatureConverter
from ledex_jax.data.sft_pipeline import make_sft_dataset, sft_examples, steps_per_epoch
from ledex_jax.data.vocabulary import HFVocabulary
from ledex_jax.models import build_model, get_preset
from sft_fixtures.tiny_tokenizer import DEMO, tiny_bpe

SEQ = 512
ONE_PASS = {"num_epochs": 1, "shuffle": False}


@pytest.fixture(scope="module")
def tok():
    return tiny_bpe(vocab_size=800)


@pytest.fixture(scope="module")
def demo():
    return read_sft_jsonl(DEMO)


def decode(tok, ids):
    return tok.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def collect(batches):
    return [dict(b) for b in batches]


def segments(batch):
    """(row, segment id, positions of that segment) for every example in a batch."""
    for r, row in enumerate(batch["segment_ids"]):
        for s in np.unique(row[row > 0]):
            yield r, s, np.flatnonzero(row == s)


def test_converter_rows_by_hand():
    """Two examples with real id-0 tokens: packed into one row, then unpacked into two."""
    examples = [{"tokens": [0, 5, 0, 7], "answer_mask": [0, 0, 1, 1]}, {"tokens": [3, 0, 9], "answer_mask": [0, 1, 1]}]
    ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature={
        k: tf.TensorSpec([None], tf.int32) for k in ("tokens", "answer_mask")})
    packed = list(SFTFeatureConverter(pack=True)(ds, {"tokens": 8, "answer_mask": 8}).as_numpy_iterator())
    assert len(packed) == 1
    row = {k: v.tolist() for k, v in packed[0].items()}
    assert row == {"inputs": [0, 5, 0, 7, 3, 0, 9, 0], "targets": [5, 0, 7, 0, 0, 9, 0, 0],
                   "loss_mask": [0, 1, 1, 0, 1, 1, 0, 0], "segment_ids": [1, 1, 1, 1, 2, 2, 2, 0],
                   "positions": [0, 1, 2, 3, 0, 1, 2, 0]}
    rows = [{k: v.tolist() for k, v in r.items()}
            for r in SFTFeatureConverter(pack=False)(ds, {"tokens": 5, "answer_mask": 5}).as_numpy_iterator()]
    assert rows[1] == {"inputs": [3, 0, 9, 0, 0], "targets": [0, 9, 0, 0, 0], "loss_mask": [1, 1, 0, 0, 0],
                       "segment_ids": [1, 1, 1, 0, 0], "positions": [0, 1, 2, 0, 0]}


def test_vocabulary_in_python_and_tf(tok):
    vocab = HFVocabulary(tok)
    text = "def f(x):\n    return x + 1\nprint(f(1))"
    ids = vocab.encode(text)
    assert vocab.vocab_size == len(tok) and vocab.eos_id == tok.eos_token_id and 0 in ids
    assert vocab.decode(ids) == text
    assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids
    ragged = vocab.encode_tf(tf.constant([text, "", "x"]))
    assert ragged.to_list() == [ids, [], vocab.encode("x")]
    eos, abc = vocab.eos_id, vocab.encode("abc")
    rows = [ids + [eos, 7, 7], abc + [eos] + [7] * (len(ids) + 2 - len(abc))]
    assert vocab.decode_tf(tf.constant(rows)).numpy().tolist() == [(text + tok.eos_token).encode(),
                                                                  ("abc" + tok.eos_token).encode()]
    assert vocab.decode_tf(tf.constant(ids)).numpy() == text.encode()
    assert vocab == HFVocabulary(tiny_bpe(vocab_size=800)) and vocab != HFVocabulary(tiny_bpe(vocab_size=400))


@pytest.mark.parametrize("style", P.STYLES)
def test_batches_mask_exactly_the_answers(tok, demo, style):
    cfg = dict(ONE_PASS, style=style)
    batches = make_sft_dataset(cfg, tok, batch_size=4, seq_len=SEQ)
    got = collect(batches)
    assert len(got) == steps_per_epoch(cfg, tok, batch_size=4, seq_len=SEQ)
    for b in got:
        assert {k: (v.dtype, v.shape) for k, v in b.items()} == {
            "inputs": (np.int32, (4, SEQ)), "targets": (np.int32, (4, SEQ)), "loss_mask": (np.float32, (4, SEQ)),
            "segment_ids": (np.int32, (4, SEQ)), "positions": (np.int32, (4, SEQ))}
        pad = b["segment_ids"] == 0
        assert not b["loss_mask"][pad].any() and not b["inputs"][pad].any() and not b["positions"][pad].any()
    expected = Counter()
    for rec in demo:
        parts = P.render(rec, rec.format, style, tok)
        if len(P.encode_example(tok, parts, style)[0]) <= SEQ:
            expected[parts] += 1
    seen, zero_in_answer = Counter(), False
    for b in got:
        for r, _, idx in segments(b):
            inputs, targets, mask = b["inputs"][r, idx], b["targets"][r, idx], b["loss_mask"][r, idx]
            assert (b["positions"][r, idx] == np.arange(len(idx))).all() and idx[-1] - idx[0] == len(idx) - 1
            assert (inputs[1:] == targets[:-1]).all() and mask[-1] == 0
            first = int(np.argmax(mask))
            assert mask[first:-1].all() and not mask[:first].any()
            seen[P.PromptParts(decode(tok, inputs[: first + 1]), decode(tok, targets[first:-1]))] += 1
            zero_in_answer |= bool((targets[first:-1] == 0).any())
    assert seen == expected and batches.stats.dropped == len(demo) - sum(expected.values())
    assert zero_in_answer  # id 0 is a real token (newline) inside answers, not padding


@nnx.jit
def token_nll(model, inputs, targets, segment_ids, positions):
    out = model.forward(inputs, (segment_ids > 0).astype(jnp.int32), positions=positions, segment_ids=segment_ids)
    logp = jax.nn.log_softmax(out.logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def token_losses(model, batch):
    nll = token_nll(model, *(jnp.asarray(batch[k]) for k in ("inputs", "targets", "segment_ids", "positions")))
    return np.asarray(nll) * batch["loss_mask"]


@pytest.mark.parametrize("preset", ["tiny_llama", "tiny_gpt_bigcode"])
def test_packed_batches_give_the_same_losses(tok, preset):
    seq = 256  # short rows and the shorter formats keep the CPU forward passes cheap
    model = build_model(get_preset(preset, vocab_size=len(tok), max_position_embeddings=seq))
    cfg = dict(ONE_PASS, format_rates={"codegen": 1.0, "refine": 1.0})
    per_example = {}
    for pack in (True, False):
        losses = []
        for b in make_sft_dataset(dict(cfg, pack=pack), tok, batch_size=8, seq_len=seq):
            nll = token_losses(model, b)
            losses += [nll[r, idx][b["loss_mask"][r, idx] > 0] for r, _, idx in segments(b)]
        per_example[pack] = losses
    packed, unpacked = per_example[True], per_example[False]
    assert len(packed) == len(unpacked) > 50
    for a, u in zip(packed, unpacked):
        np.testing.assert_allclose(a, u, atol=1e-5)
    total_p, total_u = sum(x.sum(dtype=np.float64) for x in packed), sum(x.sum(dtype=np.float64) for x in unpacked)
    count = sum(len(x) for x in packed)
    assert abs(total_p - total_u) / count < 1e-5  # the mean token loss, from the (sum, count) pairs
    np.testing.assert_allclose(total_p, total_u, rtol=1e-6)


def first_batches(n, **kw):
    it = make_sft_dataset(**kw)
    return [next(it) for _ in range(n)]


def same(a, b):
    return all(set(x) == set(y) and all((x[k] == y[k]).all() for k in x) for x, y in zip(a, b))


def test_order_is_deterministic_per_seed_and_resume_skips_exactly(tok):
    kw = dict(data_cfg={}, tokenizer=tok, batch_size=4, seq_len=SEQ)  # shuffled, repeating forever
    a = first_batches(8, seed=3, **kw)
    assert same(a, first_batches(8, seed=3, **kw))
    assert not same(a[:2], first_batches(2, seed=4, **kw))
    assert same(a[5:8], first_batches(3, seed=3, start_step=5, **kw))


def example_ids(tok, **kw):
    ds, _ = sft_examples(tokenizer=tok, seq_len=4096, keep_ids=True, **kw)
    return [x.decode() for x in ds.map(lambda ex: ex["id"]).as_numpy_iterator()]


def test_host_shards_are_disjoint_and_cover_the_data(tok, demo):
    cfg = {"num_epochs": 1}
    shards = [example_ids(tok, data_cfg=cfg, shard_index=i, num_shards=2, seed=7) for i in range(2)]
    assert len(set(shards[0])) == len(shards[0]) and len(set(shards[1])) == len(shards[1])
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == {r.id for r in demo}
    assert abs(len(shards[0]) - len(shards[1])) <= 3  # one record of slack per format
    with pytest.raises(ValueError, match="shard_index=2 is not in"):
        example_ids(tok, data_cfg=cfg, shard_index=2, num_shards=2)


def test_rates_set_the_mix_when_repeating(tok):
    ds, _ = sft_examples({"format_rates": {"refine": 3.0, "codegen": 1.0}}, tok, seq_len=4096, keep_ids=True)
    ids = [x["id"].decode() for x in ds.take(400).as_numpy_iterator()]
    formats = Counter(i.rsplit("/", 1)[1] for i in ids)
    assert set(formats) == {"refine", "codegen"} and 0.65 < formats["refine"] / 400 < 0.85


def test_overlong_examples_dropped_with_a_count_or_prompt_truncated(tok, demo, caplog):
    seq = 300
    lengths = {}
    for rec in demo:
        ids, mask = P.encode_example(tok, P.render(rec, rec.format, "starchat"), "starchat")
        lengths[rec.id] = (len(ids), sum(mask))
    too_long = {i for i, (n, _) in lengths.items() if n > seq}
    assert too_long and len(too_long) < len(demo)
    with caplog.at_level(logging.WARNING, logger="ledex_jax.data.seqio_tasks"):
        ds, stats = sft_examples(ONE_PASS, tok, seq_len=seq, keep_ids=True)
        kept = {x["id"].decode() for x in ds.as_numpy_iterator()}
    assert kept == set(lengths) - too_long and stats.dropped == len(too_long) and stats.seen == len(demo)
    assert "dropped (1 of" in caplog.text and "overlong='truncate_prompt'" in caplog.text

    ds, stats = sft_examples(dict(ONE_PASS, overlong="truncate_prompt"), tok, seq_len=seq, keep_ids=True)
    kept = {x["id"].decode(): x for x in ds.as_numpy_iterator()}
    unfit = {i for i in too_long if lengths[i][1] >= seq}
    assert set(kept) == set(lengths) - unfit and stats.truncated == len(too_long - unfit)
    for i in too_long - unfit:
        x = kept[i]
        assert len(x["tokens"]) == seq and x["answer_mask"].sum() == lengths[i][1] and x["answer_mask"][-1] == 1


def test_tfds_source_gives_the_same_examples(tok, tmp_path):
    from ledex_jax.data.tfds_sft import prepare_sft_tfds
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "train.jsonl").write_text(DEMO.read_text())
    builder = prepare_sft_tfds(tmp_path / "jsonl", tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == len(read_sft_jsonl(DEMO))

    def examples(cfg):
        ds, _ = sft_examples(dict(ONE_PASS, **cfg), tok, seq_len=4096, keep_ids=True)
        return {x["id"].decode(): (x["tokens"].tolist(), x["answer_mask"].tolist()) for x in ds.as_numpy_iterator()}

    from_tfds = examples({"source": "tfds", "tfds_data_dir": str(tmp_path / "tfds")})
    assert from_tfds == examples({}) and len(from_tfds) == builder.info.splits["train"].num_examples


def test_config_errors_name_the_field(tok, tmp_path):
    def err(cfg, **kw):
        with pytest.raises(ValueError) as e:
            make_sft_dataset(cfg, kw.pop("tokenizer", tok), batch_size=kw.pop("batch_size", 2), seq_len=SEQ, **kw)
        return str(e.value)

    assert "unknown field(s) ['stlye']" in err({"stlye": "starchat"})
    assert "style='chatml'" in err({"style": "chatml"})
    assert "format_rates" in err({"format_rates": {"refine": 0}})
    assert "format_rates" in err({"format_rates": {"fix": 1.0}})
    assert "batch_size=0" in err({}, batch_size=0)
    assert "split 'validation'" in err({}, split="validation")
    only_codegen = tmp_path / "codegen.jsonl"
    only_codegen.write_text("".join(line + "\n" for line in DEMO.read_text().splitlines() if '"codegen"' in line))
    assert "no 'refine' records" in err({"path": str(only_codegen)})
    bare = tiny_bpe(vocab_size=800)
    bare.chat_template = None
    assert "needs a tokenizer with a chat template" in err({"style": "chat_template"}, tokenizer=bare)
