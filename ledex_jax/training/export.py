"""A trained checkpoint -> a Hugging Face directory (via the models package's exporter)."""
from __future__ import annotations

from pathlib import Path

import jax
from flax import nnx

from ledex_jax.models import ModelConfig, abstract_model, save_pretrained
from ledex_jax.training.checkpointing import Checkpointer, CheckpointError


def locate(path: str | Path, step: int | None = None) -> tuple[Path, int | None]:
    """Accepts a workdir, its `checkpoints/` folder or one step folder; returns (manager dir, step)."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", step
    if path.name.isdigit() and (path / "meta").is_dir():
        return path.parent, int(path.name) if step is None else step
    return path, step


def restore_model(checkpoint: str | Path, step: int | None = None):
    """Restores only the parameters (no optimizer state) onto the default device; returns
    (model, model_config, meta)."""
    directory, step = locate(checkpoint, step)
    ckpt = Checkpointer(directory, read_only=True)
    step = step if step is not None else ckpt.latest_step()
    if step is None:
        raise CheckpointError(f"no finished checkpoint under {directory}")
    meta = ckpt.read_meta(step)
    model_cfg = ModelConfig(**meta["model_config"])
    graphdef, abstract = nnx.split(abstract_model(model_cfg), nnx.Param)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
    items, meta = ckpt.restore(step, {"params": abstract}, {"model_config": meta["model_config"]})
    ckpt.close()
    return nnx.merge(graphdef, items["params"]), model_cfg, meta


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, step: int | None = None,
                      tokenizer_path: str | None = None, **save_kwargs) -> Path:
    from ledex_jax.models.tokenizer import load_tokenizer
    model, model_cfg, meta = restore_model(checkpoint, step)
    tokenizer_path = tokenizer_path or meta.get("tokenizer")
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    save_pretrained(model, model_cfg, out_dir, tokenizer=tokenizer, **save_kwargs)
    return Path(out_dir)
