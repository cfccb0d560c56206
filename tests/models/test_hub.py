"""Hub ids resolve through huggingface_hub.snapshot_download (stubbed here: no network), asking
only for the files we read; local paths never touch the hub."""
import numpy as np
import pytest

from ledex_jax.models import load_pretrained
from ledex_jax.models import hub
from ledex_jax.models.tokenizer import load_tokenizer
from hf_fixtures import char_tokenizer, save_hf


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    repo = tmp_path / "snapshot"
    save_hf("llama_gqa_untied_bias", repo)
    char_tokenizer().save_pretrained(repo)
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        if repo_id != "org/tiny":
            raise RuntimeError(f"404 {repo_id}")
        return str(repo)

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return repo, calls


def test_hub_id_loads_model_and_tokenizer(fake_hub):
    repo, calls = fake_hub
    model, cfg = load_pretrained("org/tiny@main")
    local, _ = load_pretrained(repo)
    ids = np.array([[5, 6, 7]], np.int32)
    np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(local(ids)))
    assert calls == [("org/tiny", "main", tuple(hub.MODEL_FILES))]
    assert load_tokenizer("org/tiny")("ab").input_ids == load_tokenizer(repo)("ab").input_ids
    assert calls[-1] == ("org/tiny", None, tuple(hub.TOKENIZER_FILES))


def test_unknown_hub_id_and_bad_path_are_explained(fake_hub, tmp_path):
    with pytest.raises(FileNotFoundError, match="org/missing.*Hugging Face Hub failed.*404"):
        load_pretrained("org/missing")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face Hub id"):
        load_pretrained(str(tmp_path / "nope" / "deeper" / "x"))
