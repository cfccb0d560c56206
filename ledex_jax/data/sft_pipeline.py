"""The SFT trainer's data: config -> this host's iterator of numpy batches.

    batches = make_sft_dataset(cfg.data, tokenizer, batch_size=16, seq_len=2048,
                               shard_index=jax.process_index(), num_shards=jax.process_count(),
                               seed=cfg.seed, start_step=restored_step)
    batch = next(batches)  # inputs, targets, loss_mask, segment_ids, positions: [batch_size, seq_len]

``batch_size`` is this host's rows per step (the global batch divided by ``num_shards``). Every
host must pass the same seed: shards are disjoint slices of one seeded order. The order is a
function of (data, tokenizer, config, seed, shard): re-creating the iterator with
``start_step=N`` yields exactly the batches N, N+1, ... of a fresh one (the skipped steps are
replayed through tokenization and packing, which costs no model compute).

Packing (``pack=True``, default) concatenates examples into rows with ``segment_ids`` 1, 2, ...
and ``positions`` restarting at 0; the model attends causally within a segment only, so a packed
row computes the same per-token losses as its examples in separate rows (tested).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import seqio
import tensorflow as tf

from ledex_jax.data import prompts
from ledex_jax.data.records import FORMATS, read_sft_jsonl
from ledex_jax.data.seqio_tasks import (MODEL_FEATURES, OVERLONG, LengthStats, SFTFeatureConverter, records_source,
                                        register_sft_mixture, tfds_source)
from ledex_jax.data.vocabulary import HFVocabulary

DEMO_JSONL = Path(__file__).parent / "demo" / "sft_demo.jsonl"
SOURCES = ("jsonl", "tfds")


def default_data_config() -> ml_collections.ConfigDict:
    """Every knob of the SFT data pipeline with its default (the demo data, StarChat prompts)."""
    return ml_collections.ConfigDict(dict(
        source="jsonl",               # "jsonl" or "tfds"
        path=str(DEMO_JSONL),         # jsonl: a file (split "train") or a pattern with "{split}"
        tfds_name="ledex_sft:1.0.0",  # tfds: prepared by ledex_jax.data.tfds_sft.prepare_sft_tfds
        tfds_data_dir="",             # tfds: "" = TFDS's default data dir
        style="starchat",             # "starchat" (base models) or "chat_template" (instruct models)
        format_rates={"refine": 1.0, "explain_refine": 1.0, "codegen": 1.0},  # mixture rates
        pack=True,
        overlong="drop",              # or "truncate_prompt" (see seqio_tasks)
        num_epochs=0,                 # 0 = repeat forever (the trainer counts steps); else epochs
        shuffle=True,
        shuffle_buffer_size=10_000,   # raw records held for shuffling (before tokenization)
        task_name="ledex_sft",        # seqio Task names are f"{task_name}_{format}"
    ))


class SFTBatches:
    """Iterator of numpy batch dicts. ``stats`` counts the examples tokenized, dropped and
    truncated for length so far (tf.data reads a little ahead of what was consumed)."""

    def __init__(self, dataset: tf.data.Dataset, stats: LengthStats):
        self.dataset, self.stats = dataset, stats
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        if self._it is None:
            self._it = self.dataset.as_numpy_iterator()
        return next(self._it)


def make_sft_dataset(data_cfg, tokenizer, batch_size: int, seq_len: int, shard_index: int = 0,
                     num_shards: int = 1, seed: int = 0, split: str = "train", *,
                     start_step: int = 0) -> SFTBatches:
    """This host's batches: inputs, targets (int32), loss_mask (float32), segment_ids, positions
    (int32), each [batch_size, seq_len]. A finite run's last batch is padded with empty rows."""
    for name, value, low in (("batch_size", batch_size, 1), ("seq_len", seq_len, 2), ("num_shards", num_shards, 1),
                             ("start_step", start_step, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"make_sft_dataset: {name}={value!r}; it must be an integer >= {low}")
    cfg = resolve_config(data_cfg)
    ds, stats = sft_examples(cfg, tokenizer, seq_len, shard_index, num_shards, seed, split)
    ds = SFTFeatureConverter(pack=cfg.pack)(ds, {"tokens": seq_len, "answer_mask": seq_len})
    ds = ds.batch(batch_size).map(functools.partial(_fill_batch, batch_size), num_parallel_calls=tf.data.AUTOTUNE)
    return SFTBatches(ds.skip(start_step).prefetch(2), stats)


def sft_examples(data_cfg, tokenizer, seq_len: int, shard_index: int = 0, num_shards: int = 1, seed: int = 0,
                 split: str = "train", keep_ids: bool = False) -> tuple[tf.data.Dataset, LengthStats]:
    """The mixed, sharded, shuffled examples before packing: {"tokens", "answer_mask"} (+ "id")."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} is not in [0, num_shards={num_shards}); pass "
                         f"jax.process_index() and jax.process_count()")
    cfg = resolve_config(data_cfg)
    _keep_tf_off_accelerators()
    _preflight(cfg, tokenizer)
    sources = _sources(cfg, split)
    mixture, stats = register_sft_mixture(
        cfg.task_name, sources, HFVocabulary(tokenizer), style=cfg.style,
        rates={fmt: cfg.format_rates[fmt] for fmt in sources},
        overlong=cfg.overlong, shuffle_seed=seed if cfg.shuffle else None, shuffle_buffer_size=cfg.shuffle_buffer_size)
    ds = mixture.get_dataset(
        {"tokens": seq_len, "answer_mask": seq_len}, split=split, shuffle=False, seed=seed,
        shard_info=seqio.ShardInfo(shard_index, num_shards), num_epochs=cfg.num_epochs or None,
        passthrough_features=["id"] if keep_ids else None)
    return ds, stats


def resolve_config(data_cfg) -> ml_collections.ConfigDict:
    """``data_cfg`` (ConfigDict, dict or None) over the defaults, checked; errors name the field."""
    cfg = default_data_config()
    if data_cfg is not None:
        given = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
        unknown = sorted(set(given) - set(cfg))
        if unknown:
            raise ValueError(f"data config has unknown field(s) {unknown}; the fields are {sorted(cfg)}")
        rates = given.pop("format_rates", None)
        cfg.update(given)
        if rates is not None:  # replaced, not merged: a format left out gets rate 0
            cfg.format_rates = ml_collections.ConfigDict({f: rates.get(f, 0.0) for f in FORMATS} | dict(rates))

    def bad(field: str, why: str):
        return ValueError(f"data config field {field}={cfg[field]!r}: {why}")

    if cfg.source not in SOURCES:
        raise bad("source", f"use one of {SOURCES}")
    if cfg.style not in prompts.STYLES:
        raise bad("style", f"use one of {prompts.STYLES}")
    if cfg.overlong not in OVERLONG:
        raise bad("overlong", f"use one of {OVERLONG}")
    rates = dict(cfg.format_rates)
    if set(rates) - set(FORMATS) or not all(isinstance(v, (int, float)) and v >= 0 for v in rates.values()):
        raise bad("format_rates", f"map formats {FORMATS} to rates >= 0")
    if not any(v > 0 for v in rates.values()):
        raise bad("format_rates", "give at least one format a rate > 0")
    if not isinstance(cfg.num_epochs, int) or cfg.num_epochs < 0:
        raise bad("num_epochs", "use 0 to repeat forever, or a number of epochs")
    return cfg


def _sources(cfg, split: str) -> dict[str, seqio.DataSource]:
    positive = [f for f in FORMATS if cfg.format_rates.get(f, 0) > 0]
    if cfg.source == "tfds":
        source = tfds_source(cfg.tfds_name, cfg.tfds_data_dir or None)
        return {fmt: source for fmt in positive}
    if "{split}" in cfg.path:
        path = cfg.path.format(split=split)
    elif split == "train":
        path = cfg.path
    else:
        raise ValueError(f"data config field path={cfg.path!r} names one file, used as split 'train'; for split "
                         f"{split!r} give a pattern such as 'sft_{{split}}.jsonl'")
    records = read_sft_jsonl(path)
    sources = {}
    for fmt in positive:
        mine = [r for r in records if r.format == fmt]
        if not mine and split != "train":  # a small held-out set may lack a format: evaluate the rest
            continue
        if not mine:
            raise ValueError(f"{path} has no {fmt!r} records but data config field format_rates gives it rate "
                             f"{cfg.format_rates[fmt]}; set that rate to 0 or add such records")
        sources[fmt] = records_source({split: mine})
    if not sources:
        raise ValueError(f"{path} has no records of the formats data config field format_rates uses "
                         f"({', '.join(positive)})")
    return sources


def _preflight(cfg, tokenizer) -> None:
    """Renders a small record in every used format now, so a tokenizer/template mismatch fails here
    with a PromptError instead of deep inside a tf.data worker."""
    probe = {"id": "probe", "problem": "p", "wrong_code": "w = 0", "feedback": "f", "explanation": "e",
             "refined_code": "r = 1", "format": "refine", "source": "probe"}
    for fmt in FORMATS:
        if cfg.format_rates.get(fmt, 0) > 0:
            prompts.encode_example(tokenizer, prompts.render(probe, fmt, cfg.style, tokenizer), cfg.style)


def _keep_tf_off_accelerators() -> None:
    """tf.data only needs the CPU; left alone TF would claim the GPUs' memory that JAX needs."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF devices already initialised by someone else: nothing left to do
        pass


def _fill_batch(batch_size: int, batch: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Pads a short final batch with empty rows (segment 0, no loss) and makes loss_mask float."""
    out = {}
    for k in MODEL_FEATURES:
        x = batch[k]
        x = tf.pad(x, [[0, batch_size - tf.shape(x)[0]], [0, 0]])
        x.set_shape([batch_size, x.shape[1]])
        out[k] = tf.cast(x, tf.float32) if k == "loss_mask" else x
    return out


def steps_per_epoch(data_cfg, tokenizer, batch_size: int, seq_len: int, shard_index: int = 0,
                    num_shards: int = 1, seed: int = 0, split: str = "train") -> int:
    """Batches in one epoch of this shard (one pass through tokenization and packing), to size an
    epoch-based schedule when packing makes the row count data-dependent. Shards can differ by a
    batch or so: multi-host training should repeat forever (num_epochs=0) and stop at a step count
    every host agrees on."""
    cfg = resolve_config(data_cfg)
    cfg.num_epochs = 1
    batches = make_sft_dataset(cfg, tokenizer, batch_size, seq_len, shard_index, num_shards, seed, split)
    return int(batches.dataset.reduce(0, lambda n, _: n + 1).numpy())
