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

import jax
import numpy as np

from ledex_jax.data import sft_pipeline

TRAINER_ONLY_FIELDS = ("seq_len", "eval_path", "shard_by_host")


def pipeline_config(data_cfg, **changes):
    """config.data without the trainer's own fields, as sft_pipeline expects it."""
    fields = {k: v for k, v in data_cfg.to_dict().items() if k not in TRAINER_ONLY_FIELDS}
    fields.update(changes)
    return sft_pipeline.resolve_config(fields)


class SFTData:
    def __init__(self, cfg, tokenizer, rows: np.ndarray):
        """rows: indices of the global batch rows this host feeds (train_state.process_rows)."""
        self.cfg, self.tokenizer, self.rows = cfg, tokenizer, rows
        self.global_batch = cfg.train.batch_size
        self.seq_len = cfg.data.seq_len
        self.by_host = cfg.data.shard_by_host and jax.process_count() > 1
        if self.by_host and len(rows) != self.global_batch // jax.process_count():
            raise ValueError("data.shard_by_host=True needs each host to feed an equal block of rows; "
                             "use the default data.shard_by_host=False with this mesh")
        self.train_cfg = pipeline_config(cfg.data)
        sft_pipeline.resolve_config(self.train_cfg)  # fail early, naming the field

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
