"""config.json <-> ModelConfig for the supported families.

Anything in a config.json that would change the math in a way our backbones do not implement
(another RoPE scaling, another activation, unscaled attention, ...) is an error naming the field,
never silently dropped.
"""
from __future__ import annotations

from typing import Any

from ledex_jax.models.config import SUPPORTED_MODEL_TYPES, ModelConfig

_TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new")  # both are 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))


def _unsupported(field: str, value: Any, supported: str) -> ValueError:
    return ValueError(f"config.json: {field}={value!r} is not supported (supported: {supported})")


def _rope(hf: dict) -> tuple[float, float | None]:
    """(theta, linear factor) from either transformers-5 `rope_parameters` or legacy fields."""
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
        raise _unsupported("rope_parameters", params, "one global RoPE setting")
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, float(params["factor"])
    raise _unsupported("rope type", kind, "default, linear")


def config_from_hf(hf: dict[str, Any], dtype: str | None = None) -> ModelConfig:
    """A ModelConfig from a Hugging Face config.json dict; dtype sets param and compute dtype
    (default float32)."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"config.json: model_type={model_type!r} is not supported; "
                         f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    dtype = dtype or "float32"
    if model_type == "llama":
        return _llama_from_hf(hf, dtype)
    return _gpt_bigcode_from_hf(hf, dtype)


def _llama_from_hf(hf: dict, dtype: str) -> ModelConfig:
    if hf.get("hidden_act", "silu") != "silu":
        raise _unsupported("hidden_act", hf["hidden_act"], "silu")
    theta, factor = _rope(hf)
    hidden, heads = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    head_dim = hf.get("head_dim")
    return ModelConfig(
        model_type="llama", vocab_size=hf.get("vocab_size", 32000), hidden_size=hidden,
        intermediate_size=hf.get("intermediate_size", 11008), num_layers=hf.get("num_hidden_layers", 32),
        num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=head_dim if head_dim and head_dim * heads != hidden else None,
        max_position_embeddings=hf.get("max_position_embeddings", 2048), norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=theta, rope_scaling_factor=factor, attention_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)), tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        activation="silu", bos_token_id=hf.get("bos_token_id", 1), eos_token_id=hf.get("eos_token_id", 2),
        pad_token_id=hf.get("pad_token_id"), param_dtype=dtype, dtype=dtype)


def _gpt_bigcode_from_hf(hf: dict, dtype: str) -> ModelConfig:
    act = hf.get("activation_function", "gelu_pytorch_tanh")
    if act not in _TANH_GELUS:
        raise _unsupported("activation_function", act, ", ".join(_TANH_GELUS))
    for field, value in (("scale_attn_weights", True), ("tie_word_embeddings", True),
                         ("add_cross_attention", False)):
        if hf.get(field, value) != value:
            raise _unsupported(field, hf[field], repr(value))
    hidden = hf.get("n_embd", hf.get("hidden_size", 768))
    heads = hf.get("n_head", hf.get("num_attention_heads", 12))
    return ModelConfig(
        model_type="gpt_bigcode", vocab_size=hf.get("vocab_size", 50257), hidden_size=hidden,
        intermediate_size=hf.get("n_inner") or 4 * hidden, num_layers=hf.get("n_layer", hf.get("num_hidden_layers", 12)),
        num_heads=heads, num_kv_heads=1 if hf.get("multi_query", True) else heads,
        max_position_embeddings=hf.get("n_positions", hf.get("max_position_embeddings", 1024)),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), tie_word_embeddings=True, activation=act,
        bos_token_id=hf.get("bos_token_id", 50256), eos_token_id=hf.get("eos_token_id", 50256),
        pad_token_id=hf.get("pad_token_id"), param_dtype=dtype, dtype=dtype)


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """config.json contents that transformers loads into the same architecture."""
    common = {"vocab_size": cfg.vocab_size, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
              "pad_token_id": cfg.pad_token_id, "tie_word_embeddings": cfg.tie_word_embeddings,
              "dtype": cfg.param_dtype, "torch_dtype": cfg.param_dtype}
    if cfg.model_type == "llama":
        rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
        if cfg.rope_scaling_factor:
            rope = {"rope_type": "linear", "rope_theta": cfg.rope_theta, "factor": cfg.rope_scaling_factor}
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common,
                "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
                "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
                "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.dim_per_head, "hidden_act": "silu",
                "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.norm_eps,
                "rope_theta": cfg.rope_theta, "rope_parameters": rope, "attention_bias": cfg.attention_bias,
                "mlp_bias": cfg.mlp_bias}
    if cfg.dim_per_head * cfg.num_heads != cfg.hidden_size:
        raise ValueError(f"gpt_bigcode export: head_dim={cfg.dim_per_head} x num_heads={cfg.num_heads} must equal "
                         f"hidden_size={cfg.hidden_size} (transformers derives head_dim from them)")
    return {"architectures": ["GPTBigCodeForCausalLM"], "model_type": "gpt_bigcode", **common,
            "n_embd": cfg.hidden_size, "n_inner": cfg.intermediate_size, "n_layer": cfg.num_layers,
            "n_head": cfg.num_heads, "n_positions": cfg.max_position_embeddings,
            "multi_query": cfg.num_kv_heads == 1, "layer_norm_epsilon": cfg.norm_eps,
            "activation_function": cfg.activation if cfg.activation in _TANH_GELUS else "gelu_pytorch_tanh",
            "scale_attn_weights": True}


def generation_config(cfg: ModelConfig) -> dict[str, Any]:
    out = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id}
    return {k: v for k, v in out.items() if v is not None}
