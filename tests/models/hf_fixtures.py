"""Tiny random transformers models for parity tests, built in the test (no hub access).

Every parameter, norms and biases included, is drawn at random with a large std: HF's default
init leaves biases at zero and norms at one, which would let a mis-mapped bias or norm pass, and
small weights give near-uniform logits whose greedy argmax is a coin toss between near-ties.
"""
from __future__ import annotations

import numpy as np

VARIANTS = ("llama_gqa_untied_bias", "llama_tied_headdim_linear_rope", "bigcode_mqa", "bigcode_mha")


def hf_config(variant: str):
    from transformers import GPTBigCodeConfig, LlamaConfig

    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if variant == "llama_gqa_untied_bias":
        return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                           tie_word_embeddings=False, rope_theta=500.0, rms_norm_eps=1e-5,
                           max_position_embeddings=128, **ids)
    if variant == "llama_tied_headdim_linear_rope":
        return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True,
                           rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 2.0},
                           max_position_embeddings=128, **ids)
    if variant == "bigcode_mqa":
        return GPTBigCodeConfig(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=128, multi_query=True,
                                **ids)
    if variant == "bigcode_mha":
        return GPTBigCodeConfig(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_inner=96, n_positions=128,
                                multi_query=False, activation_function="gelu_new", **ids)
    raise KeyError(variant)


def hf_model(variant: str, seed: int = 0):
    """A float32 transformers model in eval mode with every parameter random."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(variant), dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.25 * torch.randn_like(p))
    return model


def save_hf(variant: str, path, seed: int = 0, **kwargs):
    model = hf_model(variant, seed)
    model.save_pretrained(str(path), **kwargs)
    return model


def batch(vocab: int = 128, seed: int = 0):
    """A left-padded batch (ids, mask): rows of 11, 7 and 3 real tokens out of 11."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(3, vocab, n).tolist() for n in (11, 7, 3)]
    from ledex_jax.models.parity import left_pad
    return left_pad(rows, pad_id=0)


def char_tokenizer():
    """A character-level fast tokenizer over 128 ids (pad 0, bos 1, eos 2), savable and loadable."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "\n": 4}
    for c in map(chr, range(32, 127)):
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
