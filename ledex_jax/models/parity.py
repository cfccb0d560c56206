"""Forward-pass and greedy-decoding parity against transformers (PyTorch), as in MaxText's logit
checker: same weights, same left-padded batch, compare logits on real tokens and greedy
continuations. Used by scripts/check_parity.py and the parity tests; torch is imported lazily.
"""
from __future__ import annotations

import contextlib

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ledex_jax.models.kv_cache import default_positions
from ledex_jax.sampling.layout import left_pad  # noqa: F401  (re-exported for the parity tools)


def jax_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.asarray(nnx.jit(lambda m, i, a: m(i, a))(model, jnp.asarray(ids), jnp.asarray(mask)))


def jax_greedy(model, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, pad_id: int = 0) -> np.ndarray:
    """[B, max_new_tokens] greedy tokens from our sampler (never stopping at EOS)."""
    from ledex_jax.sampling import Sampler

    prompts = [row[m.astype(bool)].tolist() for row, m in zip(ids, mask)]
    sampler = Sampler(model, max_prompt_len=ids.shape[1], prompt_buckets=(ids.shape[1],), pad_id=pad_id)
    return sampler.generate(prompts, max_new_tokens, greedy=True, eos_ids=[]).tokens


def hf_logits(hf_model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = hf_model(input_ids=torch.as_tensor(ids, dtype=torch.long),
                       attention_mask=torch.as_tensor(mask, dtype=torch.long),
                       position_ids=torch.as_tensor(np.array(default_positions(mask)), dtype=torch.long))
    return out.logits.float().numpy()


@contextlib.contextmanager
def _no_eos(hf_model, pad_id: int):
    """transformers merges the model's eos into any GenerationConfig we pass; swap it out."""
    from transformers import GenerationConfig

    saved = hf_model.generation_config
    hf_model.generation_config = GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=pad_id)
    try:
        yield
    finally:
        hf_model.generation_config = saved


def hf_greedy(hf_model, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, pad_id: int = 0) -> np.ndarray:
    """[B, max_new_tokens] greedy tokens from transformers' generate (never stopping at eos)."""
    import torch

    with torch.no_grad(), _no_eos(hf_model, pad_id):
        out = hf_model.generate(torch.as_tensor(ids, dtype=torch.long),
                                attention_mask=torch.as_tensor(mask, dtype=torch.long),
                                max_new_tokens=max_new_tokens, min_new_tokens=0)
    return out[:, ids.shape[1]:].numpy()


def max_logit_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Largest |a - b| over real (non-pad) positions."""
    real = mask.astype(bool)
    return float(np.abs(a[real].astype(np.float64) - b[real].astype(np.float64)).max())


def hf_model_from_gguf(path):
    """transformers' own reading of a llama GGUF (its dequantisation and q/k un-permutation) in a
    float32 LlamaForCausalLM: an independent reference for our GGUF import."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    meta = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
    fields = {k: v for k, v in meta.items() if k not in ("model_type", "_model_name_or_path", "unk_token_id")}
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(LlamaConfig(**fields))
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=skeleton)["tensors"]
    model = LlamaForCausalLM(LlamaConfig(**fields)).float().eval()
    result = model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in tensors.items()}, strict=False)
    if result.unexpected_keys or [k for k in result.missing_keys if k != "lm_head.weight"]:
        raise ValueError(f"transformers' GGUF reading did not fill the model: {result}")
    model.tie_weights()
    return model
