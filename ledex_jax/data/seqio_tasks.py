"""seqio Tasks (one per SFT format) over SFT records, their Mixture, and the feature converter that
turns token sequences into the trainer's batch rows.

Per example a Task yields ``tokens`` (prompt + answer ids) and ``answer_mask`` (1 on answer ids),
made in Python by ``prompts.render`` + ``prompts.encode_example`` (chat templates and the
boundary-exact mask cannot be expressed in TF ops).

Overlong examples (more than ``sequence_length["tokens"]`` ids) follow ``overlong``:
- "drop" (default): skipped, counted in ``LengthStats`` and warned about. A left-truncated prompt
  loses the problem statement and the chat header, so the model would learn to fix code without
  knowing the task; better to lose the example and tell the user to raise seq_len.
- "truncate_prompt": keep the whole answer and the last ``seq_len - len(answer)`` prompt ids (at
  least one, which predicts the first answer token; a leading BOS goes with the cut); an answer
  that cannot fit is dropped.

Packing: seqio's packer (``utils.trim_and_pack_dataset``) measures an example by its non-zero ids
and marks zeros as padding, and its LM converters feed a BOS of 0 and derive loss weights from
non-zero targets. Hugging Face vocabularies use id 0 for real tokens, and our loss mask is not
"every non-pad target". ``SFTFeatureConverter`` therefore shifts ids and mask by +1 while packing
(so nothing real is 0) and builds ``inputs``/``targets``/``loss_mask`` within each segment itself:
target i is token i+1 of the same example, and the last token of an example predicts nothing.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping

import numpy as np
import seqio
import tensorflow as tf

from ledex_jax.data import prompts
from ledex_jax.data.records import FIELDS, FORMATS, SFTRecord
from ledex_jax.data.vocabulary import HFVocabulary

log = logging.getLogger(__name__)
OVERLONG = ("drop", "truncate_prompt")
MODEL_FEATURES = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


class LengthStats:
    """Counts of examples tokenized, dropped and truncated for length (thread-safe: tf.data runs
    the tokenizer on several threads). Warnings go out at the 1st, 2nd, 4th, 8th, ... drop."""

    def __init__(self):
        self._lock = threading.Lock()
        self.seen = self.dropped = self.truncated = 0

    def fit(self, ids: list[int], mask: list[int], max_len: int | None, overlong: str, rid: str):
        """(ids, mask) that fit max_len under the policy, or ([], []) for a dropped example."""
        with self._lock:
            self.seen += 1
        if max_len is None or len(ids) <= max_len:
            return ids, mask
        answer_len = sum(mask)
        if overlong == "truncate_prompt" and answer_len < max_len:
            with self._lock:
                self.truncated += 1
            cut = len(ids) - max_len
            return ids[cut:], mask[cut:]
        with self._lock:
            self.dropped += 1
            dropped, seen = self.dropped, self.seen
        if dropped & (dropped - 1) == 0:
            log.warning("SFT example %r has %d tokens (answer %d) > seq_len %d: dropped (%d of %d examples "
                        "so far); raise seq_len%s", rid, len(ids), answer_len, max_len, dropped, seen,
                        "" if overlong == "truncate_prompt" else " or set overlong='truncate_prompt'")
        return [], []


def encode_record(values, *, fmt: str, style: str, tokenizer, max_len: int | None, overlong: str,
                  stats: LengthStats) -> tuple[np.ndarray, np.ndarray]:
    """The Python body of the tokenize step: record fields (bytes, in FIELDS order) -> ids, mask."""
    rec = dict(zip(FIELDS, (v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)))
    ids, mask = prompts.encode_example(tokenizer, prompts.render(rec, fmt, style, tokenizer), style)
    ids, mask = stats.fit(ids, mask, max_len, overlong, rec["id"])
    return np.asarray(ids, np.int32), np.asarray(mask, np.int32)


def filter_format(ds: tf.data.Dataset, fmt: str) -> tf.data.Dataset:
    return ds.filter(lambda ex: tf.equal(ex["format"], fmt))


def tokenize_sft(ds: tf.data.Dataset, sequence_length=None, *, fmt: str, style: str, tokenizer,
                 overlong: str, stats: LengthStats) -> tf.data.Dataset:
    """seqio preprocessor: record fields -> {"id", "tokens", "answer_mask"}, overlong ones handled."""
    max_len = (sequence_length or {}).get("tokens")
    body = functools.partial(encode_record, fmt=fmt, style=style, tokenizer=tokenizer, max_len=max_len,
                             overlong=overlong, stats=stats)

    def encode(ex):
        tokens, mask = tf.numpy_function(lambda *v: body(v), [ex[f] for f in FIELDS], [tf.int32, tf.int32])
        tokens.set_shape([None])
        mask.set_shape([None])
        return {"id": ex["id"], "tokens": tokens, "answer_mask": mask}

    ds = ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.filter(lambda ex: tf.size(ex["tokens"]) > 0)


def shuffle_records(ds: tf.data.Dataset, *, seed: int, buffer_size: int) -> tf.data.Dataset:
    """seqio preprocessor: shuffles raw records, before tokenization, so a large buffer costs only
    strings in memory and no tokenizing before the first batch."""
    return ds.shuffle(buffer_size, seed=seed)


def records_source(records_by_split: Mapping[str, list[SFTRecord]]) -> seqio.FunctionDataSource:
    """A source over records already read and validated in Python (errors name the file line)."""
    columns = {split: {f: [getattr(r, f) for r in recs] for f in FIELDS} for split, recs in records_by_split.items()}

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # records are shuffled by the Task's shuffle_records step
        return tf.data.Dataset.from_tensor_slices({f: tf.constant(v, tf.string) for f, v in columns[split].items()})

    return seqio.FunctionDataSource(dataset_fn, splits=list(columns),
                                    num_input_examples={s: len(r) for s, r in records_by_split.items()})


def tfds_source(tfds_name: str, data_dir: str | None) -> seqio.TfdsDataSource:
    """A source over a dataset prepared by ``tfds_sft.prepare_sft_tfds`` (e.g. "ledex_sft:1.0.0")."""
    from ledex_jax.data import tfds_sft  # noqa: F401  (registers the builder class)
    return seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir)


def _buffer_size(source: seqio.DataSource, limit: int) -> int:
    """``limit``, or the largest split's size when smaller: a buffer much larger than the data
    (which repeats upstream) would mix many epochs together instead of permuting each one."""
    sizes = [source.num_input_examples(split) for split in source.splits]
    return min(limit, max(sizes)) if sizes and all(sizes) else limit


def register_sft_mixture(name: str, sources: Mapping[str, seqio.DataSource], vocabulary: HFVocabulary, *,
                         style: str, rates: Mapping[str, float], overlong: str = "drop",
                         shuffle_seed: int | None = None,
                         shuffle_buffer_size: int = 10_000) -> tuple[seqio.Mixture, LengthStats]:
    """Registers Task ``{name}_{format}`` for each format with a positive rate, and Mixture ``name``.

    ``sources[format]`` feeds that format's Task (the same source may serve every format: records
    are filtered by their "format" field). Registration replaces earlier providers of the same
    names, so a process can rebuild its pipeline (new tokenizer, seed, resume).

    With ``shuffle_seed`` each Task shuffles its raw records with seed ``shuffle_seed`` + its format's
    index: one shared seed would put the refine and explain_refine records of a problem (same file
    order) into the same slots and so the same batches. Read the mixture with ``shuffle=False``.

    The mixture samples tasks by ``rates`` without stopping when one runs out: with finite epochs
    every record is seen exactly that many times, with endless epochs the rates set the proportions.
    """
    if overlong not in OVERLONG:
        raise ValueError(f"overlong={overlong!r}; use one of {OVERLONG}")
    if style not in prompts.STYLES:
        raise ValueError(f"style={style!r}; use one of {prompts.STYLES}")
    stats = LengthStats()
    output_features = {
        "tokens": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
        "answer_mask": seqio.Feature(seqio.PassThroughVocabulary(size=2), add_eos=False, dtype=tf.int32),
    }
    tasks = []
    for salt, fmt in enumerate(FORMATS):
        if rates.get(fmt, 0) <= 0:
            continue
        steps = [functools.partial(filter_format, fmt=fmt)]
        if shuffle_seed is not None:
            steps.append(functools.partial(shuffle_records, seed=shuffle_seed + salt,
                                           buffer_size=_buffer_size(sources[fmt], shuffle_buffer_size)))
        steps.append(functools.partial(tokenize_sft, fmt=fmt, style=style, tokenizer=vocabulary.tokenizer,
                                       overlong=overlong, stats=stats))
        task_name = f"{name}_{fmt}"
        seqio.TaskRegistry.remove(task_name)
        seqio.TaskRegistry.add(task_name, source=sources[fmt], output_features=output_features, preprocessors=steps)
        tasks.append((task_name, float(rates[fmt])))
    if not tasks:
        raise ValueError(f"no format has a positive rate in {dict(rates)}; give at least one of {FORMATS} a rate > 0")
    seqio.MixtureRegistry.remove(name)
    mixture = seqio.MixtureRegistry.add(
        name, tasks, sample_fn=functools.partial(tf.data.Dataset.sample_from_datasets, stop_on_empty_dataset=False))
    return mixture, stats


class SFTFeatureConverter(seqio.FeatureConverter):
    """{"tokens", "answer_mask"} examples -> rows of the trainer's batch (all int32, length L):

    inputs       ids fed to the model (0 on padding)
    targets      the next id of the same example (0 where there is none)
    loss_mask    1 where the target is an answer token, end marker included; else 0
    segment_ids  1, 2, ... per packed example; 0 on padding
    positions    0, 1, ... restarting at each example; 0 on padding

    With ``pack=False`` each row holds one example (segment id 1) padded on the right.
    """

    TASK_FEATURES = {"tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
                     "answer_mask": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
    MODEL_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for k in MODEL_FEATURES}
    PACKING_FEATURE_DTYPES = {}  # segment_ids/positions are model features, packed or not

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        length = task_feature_lengths["tokens"]
        ds = ds.map(lambda ex: {"tokens": ex["tokens"] + 1, "answer_mask": ex["answer_mask"] + 1},
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = self._pack_or_pad(ds, {"tokens": length, "answer_mask": length})
        return ds.map(self._convert_example, num_parallel_calls=tf.data.AUTOTUNE)

    def _convert_example(self, ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        shifted = ex["tokens"]
        real = shifted > 0
        if self.pack:
            segment_ids, positions = ex["tokens_segment_ids"], ex["tokens_positions"]
        else:
            segment_ids = tf.cast(real, tf.int32)
            positions = tf.where(real, tf.range(tf.size(shifted), dtype=tf.int32), 0)
        tokens = tf.where(real, shifted - 1, 0)
        answer = tf.cast(tf.equal(ex["answer_mask"], 2), tf.int32)
        has_next = tf.concat([tf.equal(segment_ids[1:], segment_ids[:-1]) & (segment_ids[1:] > 0), [False]], 0)
        return {"inputs": tokens,
                "targets": tf.where(has_next, tf.concat([tokens[1:], [0]], 0), 0),
                "loss_mask": tf.where(has_next, tf.concat([answer[1:], [0]], 0), 0),
                "segment_ids": segment_ids, "positions": positions}

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        return {k: task_feature_lengths["tokens"] for k in MODEL_FEATURES}
