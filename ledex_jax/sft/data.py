"""The SFT trainer's view of the data pipeline: this host's rows of each global batch.

Two ways to feed several hosts (`config.data.shard_by_host`):
- False (default): every host builds the same global batch from the seeded order and keeps the
  rows its devices hold. A run on N hosts then sees exactly the batches of a 1-host run (tested),
  at the cost of every host tokenising all examples — cheap for SFT-sized data.
- True: each host reads a disjoint seqio shard (less input work); batches then depend on the host
  count, so loss traces are comparable only between runs with the same number of hosts.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np

from ledex_jax.data import sft_pipeline
from ledex_jax.data.records import read_sft_jsonl, write_sft_jsonl

TRAINER_ONLY_FIELDS = ("seq_len", "eval_path", "eval_fraction", "shard_by_host", "train_path")


def hold_out(path: str, fraction: float, seed: int, out_dir: Path) -> str:
    """Splits one JSONL by problem (all formats of a problem on the same side) into
    out_dir/{train,validation}.jsonl; returns the "{split}" pattern. The user's file is only read."""
    records = read_sft_jsonl(path)
    problems = sorted({r.source or r.id for r in records})
    if len(problems) < 2:
        raise ValueError(f"data.eval_fraction={fraction}: {path} has a single problem, nothing to hold out; "
                         "set data.eval_fraction=0 or give data.eval_path")
    k = min(len(problems) - 1, max(1, round(fraction * len(problems))))
    held = set(np.random.default_rng(seed).choice(problems, size=k, replace=False).tolist())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_sft_jsonl(out_dir / "train.jsonl", [r for r in records if (r.source or r.id) not in held])
    write_sft_jsonl(out_dir / "validation.jsonl", [r for r in records if (r.source or r.id) in held])
    return str(out_dir / "{split}.jsonl")


def pipeline_config(data_cfg, **changes):
    """config.data without the trainer's own fields, as sft_pipeline expects it."""
    fields = {k: v for k, v in data_cfg.to_dict().items() if k not in TRAINER_ONLY_FIELDS}
    fields.update(changes)
    return sft_pipeline.resolve_config(fields)


class SFTData:
    def __init__(self, cfg, tokenizer, rows: np.ndarray, workdir: Path):
        """rows: indices of the global batch rows this host feeds (train_state.process_rows).

        With one data file and no eval_path, `data.eval_fraction` of its problems is held out for
        the eval loss (split files are written under <workdir>/heldout/)."""
        self.tokenizer, self.rows = tokenizer, rows
        if cfg.data.get("train_path"):  # a collection's sft.jsonl (scripts/collect.py), read as jsonl
            cfg = cfg.copy_and_resolve_references()
            with cfg.unlocked():
                cfg.data.path, cfg.data.source = cfg.data.train_path, "jsonl"
        d = cfg.data
        if d.source == "jsonl" and "{split}" not in d.path and not d.eval_path and d.eval_fraction > 0:
            cfg = cfg.copy_and_resolve_references()
            with cfg.unlocked():
                cfg.data.path = hold_out(d.path, d.eval_fraction, cfg.seed,
                                         Path(workdir) / "heldout" / f"process_{jax.process_index()}")
        self.cfg = cfg
        self.global_batch = cfg.train.batch_size
        self.seq_len = cfg.data.seq_len
        self.by_host = cfg.data.shard_by_host and jax.process_count() > 1
        if self.by_host and len(rows) != self.global_batch // jax.process_count():
            raise ValueError("data.shard_by_host=True needs each host to feed an equal block of rows; "
                             "use the default data.shard_by_host=False with this mesh")
        self.train_cfg = pipeline_config(cfg.data)  # fails early, naming a bad field
        if self.steps_per_epoch == 0:  # else the repeating pipeline would wait forever for a batch
            raise ValueError(f"no training example fits data.seq_len={cfg.data.seq_len} under data.overlong="
                             f"{cfg.data.overlong!r}; raise data.seq_len or set data.overlong='truncate_prompt'")

    def _make(self, data_cfg, start_step=0, split="train"):
        if self.by_host:
            return sft_pipeline.make_sft_dataset(
                data_cfg, self.tokenizer, len(self.rows), self.seq_len, jax.process_index(), jax.process_count(),
                self.cfg.seed, split, start_step=start_step)
        batches = sft_pipeline.make_sft_dataset(data_cfg, self.tokenizer, self.global_batch, self.seq_len, 0, 1,
                                                self.cfg.seed, split, start_step=start_step)
        return ({k: v[self.rows] for k, v in batch.items()} for batch in batches)

    @functools.cached_property
    def steps_per_epoch(self) -> int:
        """Global steps in one epoch (one tokenise-and-pack pass over the training data)."""
        return sft_pipeline.steps_per_epoch(self.train_cfg, self.tokenizer, self.global_batch, self.seq_len, 0, 1,
                                            self.cfg.seed)

    def train_batches(self, start_step: int = 0):
        """This host's rows of batches start_step, start_step+1, ... (repeating epochs)."""
        return iter(self._make(pipeline_config(self.cfg.data, num_epochs=0), start_step))

    def eval_batches(self):
        """Held-out batches in a fixed order: `data.eval_path`, or the `validation` split of a
        `{split}` path pattern. Returns an empty iterator when there is neither."""
        if self.cfg.data.eval_path:
            data_cfg = pipeline_config(self.cfg.data, path=self.cfg.data.eval_path, num_epochs=1, shuffle=False)
            return iter(self._make(data_cfg))
        if "{split}" in self.cfg.data.path:
            return iter(self._make(pipeline_config(self.cfg.data, num_epochs=1, shuffle=False), split="validation"))
        return iter(())
