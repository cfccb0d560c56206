"""GGUF (llama.cpp) checkpoints seen as a Hugging Face checkpoint: HF tensor names, HF layouts,
dequantised float32 values, and a ModelConfig from the GGUF metadata.

llama.cpp's converter permutes the rows of every q/k projection (weights and biases) from HF's
rotate-half RoPE layout to its interleaved one; we undo it here, per head, so everything
downstream (mapping table, model, export) is plain Hugging Face. Quantised blocks run along rows,
so a block read dequantises only the rows it needs (whole heads for q/k).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ledex_jax.models.config import ModelConfig

SUPPORTED_ARCHITECTURES = ("llama",)

_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_BLOCK = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(gguf_name: str) -> str:
    """HF name of a llama GGUF tensor; unknown names pass through (and are reported as unexpected)."""
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK and parts[3] in ("weight", "bias"):
        return f"model.layers.{parts[1]}.{_BLOCK[parts[2]]}.{parts[3]}"
    return gguf_name


def open_gguf(path: str | os.PathLike):
    """A gguf.GGUFReader, after checking the file is a GGUF file and holds every tensor it lists."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (bad magic)")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, EOFError) as e:
        raise ValueError(f"{path}: truncated or corrupt GGUF file ({size} bytes): {e}") from None
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise ValueError(f"{path}: truncated GGUF file: tensors need {end} bytes, file has {size}")
    return reader


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def config_from_gguf(reader, dtype: str | None = None) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"GGUF architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    names = {t.name for t in reader.tensors}
    get = lambda key, default=None: _field(reader, f"{arch}.{key}", default)
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = get("attention.key_length") or get("rope.dimension_count")
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise ValueError(f"GGUF {arch}.rope.scaling.type={scaling!r} is not supported (supported: none, linear)")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = get("vocab_size") or (len(tokens) if tokens is not None else None)
    if vocab is None:
        vocab = int(next(t.shape[-1] for t in reader.tensors if t.name == "token_embd.weight"))
    dtype = dtype or "float32"
    return ModelConfig(
        model_type="llama", vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")), num_heads=heads, num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(head_dim) if head_dim and int(head_dim) * heads != hidden else None,
        max_position_embeddings=int(get("context_length", 2048)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)), rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling_factor=float(get("rope.scaling.factor")) if scaling == "linear" else None,
        attention_bias="blk.0.attn_q.bias" in names, mlp_bias="blk.0.ffn_gate.bias" in names,
        tie_word_embeddings="output.weight" not in names, activation="silu",
        bos_token_id=_token(reader, "bos"), eos_token_id=_token(reader, "eos"), pad_token_id=_token(reader, "padding"),
        param_dtype=dtype, dtype=dtype)


def _token(reader, kind: str) -> int | None:
    value = _field(reader, f"tokenizer.ggml.{kind}_token_id")
    return None if value is None else int(value)


class GGUFSource:
    """Read-only, HF-named, dequantised view of a GGUF file (same interface as SafetensorsReader)."""

    def __init__(self, path: str | os.PathLike, dtype: str | None = None):
        self.path = Path(path)
        self.reader = open_gguf(self.path)
        self.config = config_from_gguf(self.reader, dtype)
        self._tensors = {hf_name(t.name): t for t in self.reader.tensors}
        c = self.config
        self._heads = {}  # HF name -> heads whose rows llama.cpp permuted
        for i in range(c.num_layers):
            for kind, n in (("q", c.num_heads), ("k", c.num_kv_heads)):
                for suffix in ("weight", "bias"):
                    self._heads[f"model.layers.{i}.self_attn.{kind}_proj.{suffix}"] = n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._tensors = {}
        self.reader = None

    def names(self) -> list[str]:
        return sorted(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in reversed(self._tensors[name].shape))  # ggml lists dims innermost first

    def dtype(self, name: str) -> str:
        if name not in self._tensors:
            raise KeyError(f"tensor {name!r} is not in {self.path}")
        return "F32"  # what read() returns, whatever the quantisation

    def quantization(self, name: str) -> str:
        return self._tensors[name].tensor_type.name

    def read(self, name: str, index: Sequence[slice] | None = None) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[name]
        shape = self.shape(name)
        index = tuple(index) if index is not None else tuple(slice(0, n) for n in shape)
        rows = index[0]
        a, b = rows.start or 0, shape[0] if rows.stop is None else rows.stop
        heads = self._heads.get(name)
        if heads:  # dequantise whole heads, then undo llama.cpp's per-head row interleaving
            d = shape[0] // heads
            a0, b0 = a // d * d, -(-b // d) * d
        else:
            a0, b0 = a, b
        if len(shape) == 1:  # vectors (norms, biases) are small: dequantise whole
            block = dequantize(t.data, t.tensor_type).reshape(shape)[a0:b0]
        else:  # quantisation blocks run along rows: dequantise only rows a0:b0
            block = dequantize(t.data[a0:b0], t.tensor_type).reshape((b0 - a0,) + shape[1:])
        if heads:
            rest = shape[1:]
            block = block.reshape(-1, d // 2, 2, *rest).swapaxes(1, 2).reshape((b0 - a0,) + rest)
        return np.asarray(block[(slice(a - a0, b - a0),) + index[1:]], dtype=np.float32)
