"""Test-wide setup: JAX on CPU with 8 virtual devices (for sharding tests), and the offline
benchmark data folder that sits beside the repository (`../shared/data`)."""
import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"offline benchmark data not found at {path} (expected ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.models.tokenizer import load_tokenizer
    return load_tokenizer(smollm2_gguf_path())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer):
    """A tiny random Llama saved as a Hugging Face directory with the real SmolLM2 tokenizer (its
    chat template, <|im_end|> as EOS), sized to the tokenizer, its LM head scaled up so the
    next-token distribution is peaked (a default random init gives near-uniform logits, where
    argmax is a coin toss)."""
    from ledex_jax.models import build_model, get_preset, save_pretrained
    tok = smollm2_tokenizer
    cfg = get_preset("tiny_llama").replace(vocab_size=len(tok), max_position_embeddings=512, bos_token_id=1,
                                           eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    model = build_model(cfg, seed=0)
    model.lm_head.value = model.lm_head.value * 40.0
    out = tmp_path_factory.mktemp("tiny_model") / "tiny"
    save_pretrained(model, cfg, out, tokenizer=tok)
    return out
