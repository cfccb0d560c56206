"""Orbax checkpoints for trainers: async saves, keep-last-N, atomic steps, clear errors.

A checkpoint holds named pytree items (e.g. `params`, `opt_state`) and a JSON `meta` record (step,
model config, tokenizer). Items restore independently, so export reads only `params`. A step that
cannot be restored is reported with the other steps left untouched.
"""
from __future__ import annotations

import json
from pathlib import Path

import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, directory: str | Path, keep: int | None = None, every_steps: int = 1,
                 async_save: bool = True, read_only: bool = False):
        self.directory = Path(directory).absolute()
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoint directory at {self.directory}")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every_steps, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only, read_only=read_only, create=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, items: dict, meta: dict, force: bool = False) -> bool:
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        return self.manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args), force=force)

    def read_meta(self, step: int) -> dict:
        path = self.directory / str(step) / "meta" / "metadata"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(self._explain(step, f"its meta record {path} is unreadable ({e})")) from e

    def restore(self, step: int, abstract_items: dict, expected_meta: dict | None = None):
        """Restores ({name: tree}, meta) for the named items (abstract trees carry dtype, shape and
        sharding); `expected_meta` keys must match what was saved (e.g. the model config)."""
        meta = self.read_meta(step)
        for key, want in (expected_meta or {}).items():
            if meta.get(key) != want:
                raise CheckpointError(self._explain(
                    step, f"it was written with a different {key}:\n  saved:   {meta.get(key)}\n  current: {want}"))
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                **{name: ocp.args.StandardRestore(tree) for name, tree in abstract_items.items()}))
        except Exception as e:  # orbax raises many types for truncated/corrupt files
            raise CheckpointError(self._explain(step, f"restoring it failed: {type(e).__name__}: {e}")) from e
        return {name: restored[name] for name in abstract_items}, meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _explain(self, step: int, why: str) -> str:
        others = [s for s in self.all_steps() if s != step]
        return (f"checkpoint {self.directory / str(step)} cannot be used: {why}.\n"
                f"Nothing was deleted; other checkpoints here: {others or 'none'}. Resume from one of them with "
                f"--config.checkpoint.restore_step=N, or start fresh with a new --workdir.")
