"""Hugging Face tensor names <-> our parameters: one table per family.

Each entry (`Piece`) says how one of our parameters (one layer of it, for stacked params) is a
view of one HF tensor: an optional row range (fused `c_attn`, multi-query), a reshape of every
HF dimension (`split`), an optional fixed index (fused `c_attn`, multi-head: per-head q|k|v),
and a transpose (`perm`). That is all a conversion may do: no arithmetic, so an export can never
silently change the model. The same entry serves block reads (import: one device's slice) and
writes (export: fill the HF tensor).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Sequence

import numpy as np

from ledex_jax.models.config import ModelConfig

ReadFn = Callable[[str, Sequence[slice]], np.ndarray]  # (hf name, block) -> array


@dataclasses.dataclass(frozen=True)
class Piece:
    ours: str  # our parameter path, e.g. "layers.q_proj"
    hf: str  # HF tensor name; "{i}" stands for the layer index of stacked params
    hf_shape: tuple[int, ...]
    split: tuple[tuple[int, ...], ...]  # per HF dim: the sizes it is viewed as (over the piece's rows)
    perm: tuple[int, ...]  # our dim j is kept view dim perm[j]
    start: int = 0  # first row of the piece on HF dim 0
    pick: tuple[tuple[int, int], ...] = ()  # (view dim, index) held fixed

    @property
    def stacked(self) -> bool:
        return "{i}" in self.hf

    def hf_name(self, layer: int | None) -> str:
        return self.hf.format(i=layer) if self.stacked else self.hf

    @property
    def view_shape(self) -> tuple[int, ...]:
        return tuple(s for group in self.split for s in group)

    @property
    def kept(self) -> tuple[int, ...]:
        fixed = {pos for pos, _ in self.pick}
        return tuple(k for k in range(len(self.view_shape)) if k not in fixed)

    @property
    def shape(self) -> tuple[int, ...]:
        """Our per-layer shape."""
        view = self.view_shape
        return tuple(view[self.kept[p]] for p in self.perm)

    def read(self, read_hf: ReadFn, layer: int | None, index: Sequence[slice]) -> np.ndarray:
        """Our block `index` (one slice per per-layer dim) of this layer, reading only its rows."""
        view_idx: list[slice | int] = [slice(0, n) for n in self.view_shape]
        for pos, i in self.pick:
            view_idx[pos] = i
        for j, p in enumerate(self.perm):
            view_idx[self.kept[p]] = index[j]
        hf_idx, inner, block_shape, pos = [], [], [], 0
        for g, sizes in enumerate(self.split):
            first, rest = view_idx[pos], math.prod(sizes[1:])
            a, b = (first, first + 1) if isinstance(first, int) else (first.start, first.stop)
            offset = self.start if g == 0 else 0
            hf_idx.append(slice(offset + a * rest, offset + b * rest))
            inner.append(0 if isinstance(first, int) else slice(None))
            inner.extend(view_idx[pos + 1: pos + len(sizes)])
            block_shape.extend([b - a, *sizes[1:]])
            pos += len(sizes)
        block = read_hf(self.hf_name(layer), hf_idx).reshape(block_shape)[tuple(inner)]
        return block.transpose(self.perm)

    def write(self, hf_buffer: np.ndarray, value: np.ndarray) -> None:
        """Writes our per-layer `value` into its place in the full HF tensor `hf_buffer`."""
        if value.shape != self.shape:
            raise ValueError(f"{self.ours}: value shape {value.shape}, expected {self.shape}")
        rows = math.prod(self.split[0])
        view = hf_buffer[self.start:self.start + rows].reshape(self.view_shape)
        if not np.may_share_memory(view, hf_buffer):  # a copy would drop the write silently
            raise AssertionError(f"{self.hf}: export view is not a view")
        idx: list[slice | int] = [slice(None)] * len(self.view_shape)
        for pos, i in self.pick:
            idx[pos] = i
        view[tuple(idx)] = value.transpose(np.argsort(self.perm))


def _p(ours, hf, hf_shape, split, perm, **kw) -> Piece:
    return Piece(ours, hf, tuple(hf_shape), tuple(tuple(g) for g in split), tuple(perm), **kw)


def _llama(c: ModelConfig) -> list[Piece]:
    v, e, f, h, k, d = c.vocab_size, c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.dim_per_head
    lay, att, mlp = "model.layers.{i}.", "model.layers.{i}.self_attn.", "model.layers.{i}.mlp."
    out = [_p("embed_tokens", "model.embed_tokens.weight", (v, e), [(v,), (e,)], (0, 1)),
           _p("layers.input_layernorm", lay + "input_layernorm.weight", (e,), [(e,)], (0,)),
           _p("layers.q_proj", att + "q_proj.weight", (h * d, e), [(h, d), (e,)], (2, 0, 1)),
           _p("layers.k_proj", att + "k_proj.weight", (k * d, e), [(k, d), (e,)], (2, 0, 1)),
           _p("layers.v_proj", att + "v_proj.weight", (k * d, e), [(k, d), (e,)], (2, 0, 1)),
           _p("layers.o_proj", att + "o_proj.weight", (e, h * d), [(e,), (h, d)], (1, 2, 0))]
    if c.attention_bias:
        out += [_p("layers.q_bias", att + "q_proj.bias", (h * d,), [(h, d)], (0, 1)),
                _p("layers.k_bias", att + "k_proj.bias", (k * d,), [(k, d)], (0, 1)),
                _p("layers.v_bias", att + "v_proj.bias", (k * d,), [(k, d)], (0, 1)),
                _p("layers.o_bias", att + "o_proj.bias", (e,), [(e,)], (0,))]
    out += [_p("layers.post_attention_layernorm", lay + "post_attention_layernorm.weight", (e,), [(e,)], (0,)),
            _p("layers.gate_proj", mlp + "gate_proj.weight", (f, e), [(f,), (e,)], (1, 0)),
            _p("layers.up_proj", mlp + "up_proj.weight", (f, e), [(f,), (e,)], (1, 0)),
            _p("layers.down_proj", mlp + "down_proj.weight", (e, f), [(e,), (f,)], (1, 0))]
    if c.mlp_bias:
        out += [_p("layers.gate_bias", mlp + "gate_proj.bias", (f,), [(f,)], (0,)),
                _p("layers.up_bias", mlp + "up_proj.bias", (f,), [(f,)], (0,)),
                _p("layers.down_bias", mlp + "down_proj.bias", (e,), [(e,)], (0,))]
    out.append(_p("norm", "model.norm.weight", (e,), [(e,)], (0,)))
    if not c.tie_word_embeddings:
        out.append(_p("lm_head", "lm_head.weight", (v, e), [(v,), (e,)], (1, 0)))
    return out


def _gpt_bigcode(c: ModelConfig) -> list[Piece]:
    v, e, f, h, k, d = c.vocab_size, c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.dim_per_head
    blk = "transformer.h.{i}."
    qkv_w, qkv_b = blk + "attn.c_attn.weight", blk + "attn.c_attn.bias"
    fused = (h * d + 2 * k * d,)
    out = [_p("wte", "transformer.wte.weight", (v, e), [(v,), (e,)], (0, 1)),
           _p("wpe", "transformer.wpe.weight", (c.max_position_embeddings, e),
              [(c.max_position_embeddings,), (e,)], (0, 1)),
           _p("layers.ln_1_weight", blk + "ln_1.weight", (e,), [(e,)], (0,)),
           _p("layers.ln_1_bias", blk + "ln_1.bias", (e,), [(e,)], (0,))]
    if k == 1:  # multi-query: rows are [q (H*D) | k (D) | v (D)]
        for name, start, heads in (("q", 0, h), ("k", h * d, 1), ("v", h * d + d, 1)):
            out += [_p(f"layers.{name}_proj", qkv_w, fused + (e,), [(heads, d), (e,)], (2, 0, 1), start=start),
                    _p(f"layers.{name}_bias", qkv_b, fused, [(heads, d)], (0, 1), start=start)]
    else:  # multi-head: rows are per head [q (D) | k (D) | v (D)]
        for j, name in enumerate("qkv"):
            out += [_p(f"layers.{name}_proj", qkv_w, fused + (e,), [(h, 3, d), (e,)], (2, 0, 1), pick=((1, j),)),
                    _p(f"layers.{name}_bias", qkv_b, fused, [(h, 3, d)], (0, 1), pick=((1, j),))]
    out += [_p("layers.o_proj", blk + "attn.c_proj.weight", (e, h * d), [(e,), (h, d)], (1, 2, 0)),
            _p("layers.o_bias", blk + "attn.c_proj.bias", (e,), [(e,)], (0,)),
            _p("layers.ln_2_weight", blk + "ln_2.weight", (e,), [(e,)], (0,)),
            _p("layers.ln_2_bias", blk + "ln_2.bias", (e,), [(e,)], (0,)),
            _p("layers.c_fc", blk + "mlp.c_fc.weight", (f, e), [(f,), (e,)], (1, 0)),
            _p("layers.c_fc_bias", blk + "mlp.c_fc.bias", (f,), [(f,)], (0,)),
            _p("layers.c_proj", blk + "mlp.c_proj.weight", (e, f), [(e,), (f,)], (1, 0)),
            _p("layers.c_proj_bias", blk + "mlp.c_proj.bias", (e,), [(e,)], (0,)),
            _p("ln_f_weight", "transformer.ln_f.weight", (e,), [(e,)], (0,)),
            _p("ln_f_bias", "transformer.ln_f.bias", (e,), [(e,)], (0,))]
    return out


_TABLES = {"llama": _llama, "gpt_bigcode": _gpt_bigcode}

# Tensors some HF checkpoints carry that hold no weights of ours: non-persistent buffers saved by
# old transformers versions, and an LM head stored next to the embedding it is tied to.
_IGNORED = {
    "llama": (r"\.rotary_emb\.inv_freq$",),
    "gpt_bigcode": (r"\.attn\.(masked_)?bias$", r"^lm_head\.weight$"),
}


def pieces(cfg: ModelConfig) -> dict[str, Piece]:
    """Our parameter path -> its Piece, in Hugging Face order."""
    return {p.ours: p for p in _TABLES[cfg.model_type](cfg)}


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape, in the order Hugging Face writes them (embeddings, layers, head)."""
    table = list(pieces(cfg).values())
    first = next(n for n, p in enumerate(table) if p.stacked)
    last = max(n for n, p in enumerate(table) if p.stacked)
    out: dict[str, tuple[int, ...]] = {}
    for p in table[:first]:
        out.setdefault(p.hf, p.hf_shape)
    for i in range(cfg.num_layers):
        for p in table[first:last + 1]:
            out.setdefault(p.hf_name(i), p.hf_shape)
    for p in table[last + 1:]:
        out.setdefault(p.hf, p.hf_shape)
    return out


def sources(cfg: ModelConfig) -> dict[str, list[tuple[Piece, int | None]]]:
    """HF tensor name -> the (piece, layer) pairs that fill it (several for a fused c_attn)."""
    out: dict[str, list[tuple[Piece, int | None]]] = {}
    for p in pieces(cfg).values():
        for layer in (range(cfg.num_layers) if p.stacked else [None]):
            out.setdefault(p.hf_name(layer), []).append((p, layer))
    for name, parts in out.items():  # the parts must tile the tensor exactly
        shape = parts[0][0].hf_shape
        if sum(math.prod(p.shape) for p, _ in parts) != math.prod(shape):
            raise AssertionError(f"mapping table for {cfg.model_type}: pieces of {name} do not cover {shape}")
    return out


def is_ignored(cfg: ModelConfig, name: str) -> bool:
    patterns = _IGNORED[cfg.model_type]
    if cfg.model_type == "llama" and cfg.tie_word_embeddings:
        patterns = patterns + (r"^lm_head\.weight$",)
    return any(re.search(pat, name) for pat in patterns)


def check_tensors(cfg: ModelConfig, found: dict[str, tuple[int, ...]], where: str) -> None:
    """Raises one error listing every missing, unexpected and mis-shaped tensor of a checkpoint."""
    expected = expected_tensors(cfg)
    missing = [n for n in expected if n not in found]
    unexpected = sorted(n for n in found if n not in expected and not is_ignored(cfg, n))
    misshaped = [(n, found[n], s) for n, s in expected.items() if n in found and tuple(found[n]) != s]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"{where} does not match its config ({cfg.model_type}, {cfg.num_layers} layers, "
             f"hidden {cfg.hidden_size}, {cfg.num_heads} heads / {cfg.num_kv_heads} kv heads):"]
    lines += [f"  missing tensor {n} (expected shape {expected[n]})" for n in missing]
    lines += [f"  unexpected tensor {n} (shape {tuple(found[n])})" for n in unexpected]
    lines += [f"  tensor {n}: checkpoint shape {tuple(got)}, expected {want}" for n, got, want in misshaped]
    if len(lines) > 41:
        lines = lines[:41] + [f"  ... and {len(lines) - 41} more"]
    raise ValueError("\n".join(lines))
