"""Fixtures for the server tests: a tiny random Llama saved as a Hugging Face directory with the
real SmolLM2 tokenizer (its chat template, <|im_end|> as EOS)."""
from __future__ import annotations

import pytest

for _package in ("fastapi", "uvicorn", "openai"):  # the `serve` extra: pip install -e .[serve]
    pytest.importorskip(_package, reason=f"the server tests need the serve extra ({_package})")


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.models.tokenizer import load_tokenizer
    return load_tokenizer(smollm2_gguf_path())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer):
    """tiny_llama sized to the tokenizer, its LM head scaled up so the next-token distribution is
    peaked (a default random init gives near-uniform logits, where argmax is a coin toss)."""
    from ledex_jax.models import build_model, get_preset, save_pretrained
    tok = smollm2_tokenizer
    cfg = get_preset("tiny_llama").replace(vocab_size=len(tok), max_position_embeddings=512, bos_token_id=1,
                                           eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    model = build_model(cfg, seed=0)
    model.lm_head.value = model.lm_head.value * 40.0
    out = tmp_path_factory.mktemp("serve") / "tiny"
    save_pretrained(model, cfg, out, tokenizer=tok)
    return out
