"""Named model presets: the published architectures plus tiny configs for tests."""
from __future__ import annotations

from ledex_jax.models.config import ModelConfig

_PRESETS: dict[str, ModelConfig] = {
    # Meta CodeLlama (Llama-2 architecture, rope_theta 1e6, vocab 32016 with infilling tokens).
    "codellama_7b": ModelConfig(
        model_type="llama", vocab_size=32016, hidden_size=4096, intermediate_size=11008, num_layers=32,
        num_heads=32, num_kv_heads=32, max_position_embeddings=16384, rope_theta=1e6, bos_token_id=1,
        eos_token_id=2),
    "codellama_13b": ModelConfig(
        model_type="llama", vocab_size=32016, hidden_size=5120, intermediate_size=13824, num_layers=40,
        num_heads=40, num_kv_heads=40, max_position_embeddings=16384, rope_theta=1e6, bos_token_id=1,
        eos_token_id=2),
    "codellama_34b": ModelConfig(
        model_type="llama", vocab_size=32000, hidden_size=8192, intermediate_size=22016, num_layers=48,
        num_heads=64, num_kv_heads=8, max_position_embeddings=16384, rope_theta=1e6, bos_token_id=1,
        eos_token_id=2),
    "llama2_7b": ModelConfig(
        model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
        num_heads=32, num_kv_heads=32, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2),
    # DeepSeek-Coder uses linear RoPE scaling (factor 4) on a Llama body.
    "deepseek_coder_6_7b": ModelConfig(
        model_type="llama", vocab_size=32256, hidden_size=4096, intermediate_size=11008, num_layers=32,
        num_heads=32, num_kv_heads=32, max_position_embeddings=16384, rope_theta=100000.0,
        rope_scaling_factor=4.0, norm_eps=1e-6, bos_token_id=32013, eos_token_id=32021),
    # A ~1.1B Llama (TinyLlama shape) for MFU measurements on one accelerator.
    "llama_1b": ModelConfig(
        model_type="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_layers=22,
        num_heads=32, num_kv_heads=4, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2),
    "smollm2_135m": ModelConfig(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
        num_heads=9, num_kv_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2),
    # BigCode StarCoder / StarCoderBase: multi-query attention, learned positions.
    "starcoder_15b": ModelConfig(
        model_type="gpt_bigcode", vocab_size=49152, hidden_size=6144, intermediate_size=24576,
        num_layers=40, num_heads=48, num_kv_heads=1, max_position_embeddings=8192, activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0),
    "santacoder_1b": ModelConfig(
        model_type="gpt_bigcode", vocab_size=49280, hidden_size=2048, intermediate_size=8192, num_layers=24,
        num_heads=16, num_kv_heads=1, max_position_embeddings=2048, activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, bos_token_id=49152, eos_token_id=49152),
    # Tiny random configs for tests and CPU smoke runs.
    "tiny_llama": ModelConfig(
        model_type="llama", vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "tiny_gpt_bigcode": ModelConfig(
        model_type="gpt_bigcode", vocab_size=256, hidden_size=64, intermediate_size=256, num_layers=2,
        num_heads=4, num_kv_heads=1, max_position_embeddings=256, activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0),
}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str, **overrides) -> ModelConfig:
    """Returns the named preset, optionally with fields replaced (e.g. dtype='bfloat16')."""
    if name not in _PRESETS:
        raise KeyError(f"unknown model preset {name!r}; available: {', '.join(preset_names())}")
    return _PRESETS[name].replace(**overrides) if overrides else _PRESETS[name]
