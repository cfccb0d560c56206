"""Load a Hugging Face directory or a GGUF file into a (sharded) model; save as a HF directory.

Import never materialises the model on one host: the model is built abstractly, then each
parameter is created with `jax.make_array_from_callback` under its target sharding (its logical
axes resolved by the rules table on the given mesh), and each device's callback reads only its
own block from the checkpoint. Export gathers one tensor at a time, writes on process 0 into a
temporary directory and renames it into place, so a crash never leaves a half-written model.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding
from tqdm.auto import tqdm

from ledex_jax.models import hf_config, hf_mapping, safetensors_io
from ledex_jax.models.config import ModelConfig
from ledex_jax.sharding import DEFAULT_RULES, named_sharding

_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def _open_source(path: Path, dtype: str | None):
    """(config, tensor source) for a checkpoint directory or a .gguf file."""
    if path.suffix == ".gguf":
        from ledex_jax.models.gguf_io import GGUFSource
        source = GGUFSource(path, dtype)
        return source.config, source
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: neither a Hugging Face checkpoint directory nor a .gguf file")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json (is this a Hugging Face checkpoint directory?)")
    cfg = hf_config.config_from_hf(json.loads(config_file.read_text()), dtype)
    return cfg, safetensors_io.SafetensorsReader(path)


def load_pretrained(path, dtype: str | None = None, mesh: Mesh | None = None, rules=DEFAULT_RULES,
                    **config_overrides):
    """Returns (model, config). dtype sets param and compute dtype (default float32); with a mesh,
    every parameter is sharded as `rules` says, otherwise it lives on the default device.
    config_overrides replace ModelConfig fields (e.g. remat_policy="full"). `path` may also be a
    Hugging Face Hub id (`codellama/CodeLlama-7b-hf`), fetched once into the local HF cache."""
    from ledex_jax.models.hub import MODEL_FILES, resolve
    path = resolve(path, MODEL_FILES)
    cfg, source = _open_source(path, dtype)
    if config_overrides:
        cfg = cfg.replace(**config_overrides)
    with source:
        hf_mapping.check_tensors(cfg, {n: source.shape(n) for n in source.names()}, str(path))
        for name in hf_mapping.expected_tensors(cfg):
            if source.dtype(name) not in _FLOAT_DTYPES:
                raise ValueError(f"{path}: tensor {name} has dtype {source.dtype(name)}, expected a float type")
        model = place(cfg, source.read, mesh, rules)
    return model, cfg


def place(cfg: ModelConfig, read_hf, mesh: Mesh | None = None, rules=DEFAULT_RULES):
    """Builds the model with every parameter read block by block through `read_hf(name, index)`."""
    from ledex_jax.models import abstract_model

    table = hf_mapping.pieces(cfg)
    graphdef, state = nnx.split(abstract_model(cfg))
    np_dtype = np.dtype(cfg.jnp_param_dtype)
    default = SingleDeviceSharding(jax.devices()[0])
    for path, var in tqdm(nnx.to_flat_state(state), desc="placing parameters", unit="param", disable=None):
        key = ".".join(str(p) for p in path)
        if key not in table:
            raise AssertionError(f"parameter {key} has no entry in the {cfg.model_type} mapping table")
        piece, shape = table[key], tuple(var.get_value().shape)
        if piece.shape != shape[1 if piece.stacked else 0:]:
            raise AssertionError(f"mapping table: {key} is {piece.shape} per layer, model has {shape}")
        sharding = default if mesh is None else named_sharding(
            mesh, var.get_metadata()["axes"], rules, shape, f"parameter {key}")
        var.set_value(jax.make_array_from_callback(shape, sharding, _reader(piece, shape, read_hf, np_dtype)))
    return nnx.merge(graphdef, state)


def _reader(piece: hf_mapping.Piece, shape, read_hf, np_dtype):
    """The callback for one parameter: its block for one device (cached: replicas ask twice)."""
    cache: dict = {}

    def callback(index):
        index = tuple(slice(*s.indices(n)[:2]) for s, n in zip(index, shape))
        key = tuple((s.start, s.stop) for s in index)
        if key not in cache:
            if piece.stacked:
                blocks = [piece.read(read_hf, i, index[1:]) for i in range(index[0].start, index[0].stop)]
                block = np.stack(blocks) if blocks else np.zeros((0,) + piece.shape, np_dtype)
            else:
                block = piece.read(read_hf, None, index)
            cache.clear()  # devices ask in turn; keep only the latest block
            cache[key] = np.ascontiguousarray(block, dtype=np_dtype)
        return cache[key]

    return callback


# --- export -----------------------------------------------------------------------------------

def _host(x: jax.Array) -> np.ndarray:
    """The whole array on this host, gathered across processes when it spans several."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _params(model, cfg: ModelConfig) -> dict[str, jax.Array]:
    table = hf_mapping.pieces(cfg)
    params = {".".join(str(p) for p in path): var.get_value()
              for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    if set(params) != set(table):
        raise ValueError(f"model parameters {sorted(set(params) ^ set(table))} do not match the "
                         f"{cfg.model_type} mapping table for this config (was the model built from it?)")
    for key, piece in table.items():
        want = ((cfg.num_layers,) if piece.stacked else ()) + piece.shape
        if tuple(params[key].shape) != want:
            raise ValueError(f"parameter {key} has shape {tuple(params[key].shape)}, config implies {want}")
    return params


def save_pretrained(model, config: ModelConfig, out_dir, tokenizer=None, max_shard_size: int | str = "2GB",
                    overwrite: bool = False) -> Path:
    """Writes sharded safetensors + index, config.json, generation_config.json and the tokenizer
    (a transformers tokenizer, or a path that `load_tokenizer` accepts) to out_dir."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace it")
    params = _params(model, config)
    dtype = np.dtype(params[next(iter(params))].dtype)
    shards = safetensors_io.plan_shards(
        safetensors_io.shard_entries(hf_mapping.expected_tensors(config).items(), dtype), max_shard_size)
    sources = hf_mapping.sources(config)
    writer = jax.process_index() == 0
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"

    def fetch(name):
        parts = sources[name]
        buf = np.empty(parts[0][0].hf_shape, dtype) if writer else None
        for piece, layer in parts:
            value = params[piece.ours]
            value = _host(value if layer is None else value[layer])
            if writer:
                piece.write(buf, value)
        return buf

    if writer:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    try:
        index = safetensors_io.write_shards(tmp, shards, fetch)
        if writer:
            safetensors_io.write_index(tmp, index)
            hf_cfg = hf_config.config_to_hf(config)
            hf_cfg["dtype"] = hf_cfg["torch_dtype"] = dtype.name  # what the shards hold
            _write_json(tmp / "config.json", hf_cfg)
            _write_json(tmp / "generation_config.json", hf_config.generation_config(config))
            if tokenizer is not None:
                if isinstance(tokenizer, (str, os.PathLike)):
                    from ledex_jax.models.tokenizer import load_tokenizer
                    tokenizer = load_tokenizer(tokenizer)
                tokenizer.save_pretrained(str(tmp))
            _move_into_place(tmp, out)
    except BaseException:
        if writer:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("ledex_jax.save_pretrained")
    return out


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _move_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
