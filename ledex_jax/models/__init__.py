"""Backbones (Llama, GPTBigCode), presets and Hugging Face / GGUF weight I/O.

    model, config = load_pretrained("path/to/hf_dir_or.gguf", dtype="bfloat16", mesh=mesh)
    logits = model(input_ids, attention_mask)
    save_pretrained(model, config, "out_dir", tokenizer=tok)
"""
from __future__ import annotations

import math

import jax
from flax import nnx

from ledex_jax.models.config import SUPPORTED_MODEL_TYPES, ModelConfig
from ledex_jax.models.gpt_bigcode import GPTBigCode
from ledex_jax.models.decoder import ModelOutput
from ledex_jax.models.kv_cache import KVCache
from ledex_jax.models.llama import Llama
from ledex_jax.models.presets import get_preset, preset_names

FAMILIES = {"llama": Llama, "gpt_bigcode": GPTBigCode}


def build_model(config: ModelConfig, seed: int = 0) -> Llama | GPTBigCode:
    """A randomly initialised model (for tests, or before loading weights)."""
    return FAMILIES[config.model_type](config, rngs=nnx.Rngs(seed))


def abstract_model(config: ModelConfig):
    """The model's structure with ShapeDtypeStructs instead of arrays: nothing is allocated."""
    return nnx.eval_shape(lambda: build_model(config))


def param_count(config: ModelConfig) -> int:
    state = nnx.state(abstract_model(config), nnx.Param)
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def load_pretrained(path, dtype: str | None = None, mesh=None, **kwargs):
    """Loads a Hugging Face checkpoint directory or a `.gguf` file; returns (model, config)."""
    from ledex_jax.models.checkpoint_io import load_pretrained as _load
    return _load(path, dtype=dtype, mesh=mesh, **kwargs)


def save_pretrained(model, config: ModelConfig, out_dir, tokenizer=None, **kwargs):
    """Writes a Hugging Face directory (sharded safetensors + index + config + tokenizer)."""
    from ledex_jax.models.checkpoint_io import save_pretrained as _save
    return _save(model, config, out_dir, tokenizer=tokenizer, **kwargs)


__all__ = ["ModelConfig", "SUPPORTED_MODEL_TYPES", "Llama", "GPTBigCode", "KVCache", "ModelOutput",
           "build_model", "abstract_model", "param_count", "get_preset", "preset_names",
           "load_pretrained", "save_pretrained"]
