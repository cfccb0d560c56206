"""Imported tiny random transformers models reproduce PyTorch: logits on a left-padded batch
(real positions only) within 1e-4 in float32, and identical 32-token greedy continuations."""
import numpy as np
import pytest

import hf_fixtures as F
from ledex_jax.models import load_pretrained, parity


@pytest.fixture(scope="module", params=F.VARIANTS)
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf = F.save_hf(request.param, path)
    model, cfg = load_pretrained(path)
    return request.param, hf, model, cfg


def test_config_read_from_config_json(pair):
    variant, hf, _, cfg = pair
    c = hf.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers) == (c.vocab_size, c.hidden_size, c.num_hidden_layers)
    assert cfg.num_kv_heads == c.num_key_value_heads
    if variant.startswith("llama"):
        assert cfg.dim_per_head == c.head_dim
        assert cfg.tie_word_embeddings == c.tie_word_embeddings
        assert cfg.attention_bias == c.attention_bias
        assert cfg.rope_scaling_factor == (2.0 if "linear" in variant else None)
    else:
        assert cfg.intermediate_size == (c.n_inner or 4 * c.n_embd)


def test_logits_match_pytorch_on_left_padded_batch(pair):
    _, hf, model, _ = pair
    ids, mask = F.batch()
    assert (mask == 0).any(), "the batch must contain left padding"
    diff = parity.max_logit_diff(parity.jax_logits(model, ids, mask), parity.hf_logits(hf, ids, mask), mask)
    assert diff <= 1e-4


def test_greedy_continuations_identical(pair):
    _, hf, model, _ = pair
    ids, mask = F.batch(seed=1)
    ours = parity.jax_greedy(model, ids, mask, 32)
    theirs = parity.hf_greedy(hf, ids, mask, 32, pad_id=0)
    assert ours.shape == theirs.shape == (3, 32)
    np.testing.assert_array_equal(ours, theirs)


def test_parity_check_detects_a_swapped_layer(pair):
    """The comparison itself can fail: swapping two layers' MLP weights breaks it."""
    import torch

    variant, hf, model, _ = pair
    bad = F.hf_model(variant)
    bad.load_state_dict(hf.state_dict())
    blocks = bad.model.layers if hasattr(bad, "model") else bad.transformer.h
    with torch.no_grad():
        first, second = blocks[0].mlp, blocks[1].mlp
        for (_, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
            saved = a.clone()
            a.copy_(b)
            b.copy_(saved)
    ids, mask = F.batch()
    assert parity.max_logit_diff(parity.jax_logits(model, ids, mask), parity.hf_logits(bad, ids, mask), mask) > 1e-2
