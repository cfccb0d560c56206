"""Preset shapes: parameter counts by abstract evaluation (nothing allocated) vs published counts."""
import pytest

from ledex_jax.models import ModelConfig, get_preset, param_count, preset_names


@pytest.mark.parametrize("name,published_billions,tol", [
    ("codellama_7b", 6.74, 0.005),
    ("codellama_13b", 13.02, 0.01),
    ("codellama_34b", 33.74, 0.01),
    ("starcoder_15b", 15.5, 0.02),
    ("smollm2_135m", 0.1345, 0.0005),
])
def test_param_count_matches_published(name, published_billions, tol):
    assert abs(param_count(get_preset(name)) / 1e9 - published_billions) <= tol


def test_unknown_preset_lists_available():
    with pytest.raises(KeyError, match="codellama_7b"):
        get_preset("codellama_70b")
    assert "starcoder_15b" in preset_names()


def test_unsupported_model_type_lists_supported():
    with pytest.raises(ValueError, match="llama, gpt_bigcode"):
        ModelConfig(model_type="mistral", vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1,
                    num_heads=2, num_kv_heads=1)
