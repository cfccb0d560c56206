"""Hugging Face checkpoint I/O: export loads in transformers with no key warnings and the same
weights, import -> export -> import is bit-exact, shards and the index are consistent, and bad
checkpoints fail with errors that name the tensor (and both shapes) or say 'truncated'."""
import json
import logging
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import hf_fixtures as F
from ledex_jax.models import get_preset, load_pretrained, parity, save_pretrained
from ledex_jax.models.hf_config import config_from_hf, config_to_hf
from ledex_jax.models.safetensors_io import INDEX_FILE, parse_size
from ledex_jax.models.tokenizer import load_tokenizer


def _params(model) -> dict:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(map(str, k)): np.asarray(jax.device_get(v.get_value())) for k, v in flat}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    out = {}
    for variant in F.VARIANTS:
        path = tmp_path_factory.mktemp(variant)
        out[variant] = (F.save_hf(variant, path), path)
    return out


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("variant", F.VARIANTS)
def test_export_loads_in_transformers_without_warnings(variant, hf_dirs, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    hf, path = hf_dirs[variant]
    model, cfg = load_pretrained(path)
    out = save_pretrained(model, cfg, tmp_path / "export", tokenizer=F.char_tokenizer())
    records = _Records()
    logging.getLogger("transformers").addHandler(records)
    try:
        loaded, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True, dtype=torch.float32)
    finally:
        logging.getLogger("transformers").removeHandler(records)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert records.messages == []
    assert type(loaded) is type(hf)
    original = hf.state_dict()
    for name, tensor in loaded.state_dict().items():  # the very same weights, bit for bit
        np.testing.assert_array_equal(tensor.numpy(), original[name].numpy(), err_msg=name)
    ids, mask = F.batch()
    diff = parity.max_logit_diff(parity.jax_logits(model, ids, mask), parity.hf_logits(loaded.eval(), ids, mask), mask)
    assert diff <= 1e-4
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == [type(hf).__name__] and written["dtype"] == "float32"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    assert load_tokenizer(out)("ab")["input_ids"] == F.char_tokenizer()("ab")["input_ids"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("variant", ["llama_gqa_untied_bias", "bigcode_mha"])
def test_import_export_import_is_bit_exact(variant, dtype, hf_dirs, tmp_path):
    first, cfg = load_pretrained(hf_dirs[variant][1], dtype=dtype)
    save_pretrained(first, cfg, tmp_path / "out")
    second, cfg2 = load_pretrained(tmp_path / "out", dtype=dtype)
    assert cfg2 == cfg
    a, b = _params(first), _params(second)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == np.dtype(jax.numpy.dtype(dtype)), key
        np.testing.assert_array_equal(a[key].view(np.uint8), b[key].view(np.uint8), err_msg=key)


def test_sharded_export_index_covers_every_tensor(hf_dirs, tmp_path):
    model, cfg = load_pretrained(hf_dirs["llama_gqa_untied_bias"][1])
    out = save_pretrained(model, cfg, tmp_path / "out", max_shard_size="40KB")
    index = json.loads((out / INDEX_FILE).read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 3 and sorted(set(index["weight_map"].values())) == shards
    tensors = {}
    for shard in shards:
        part = load_file(str(out / shard))
        assert sum(v.nbytes for v in part.values()) <= 40_000 or len(part) == 1
        tensors.update(part)
    assert set(tensors) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())
    again, _ = load_pretrained(out)
    for key, value in _params(model).items():
        np.testing.assert_array_equal(value, _params(again)[key])


def test_refuses_to_overwrite_unless_asked(hf_dirs, tmp_path):
    model, cfg = load_pretrained(hf_dirs["bigcode_mqa"][1])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_pretrained(model, cfg, out)
    assert (out / "keep.txt").read_text() == "user data"
    save_pretrained(model, cfg, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directories left behind
    save_pretrained(model, cfg, tmp_path / "empty_is_fine" / "nested")


def _copy(hf_dirs, tmp_path, variant="llama_gqa_untied_bias"):
    dst = tmp_path / "ckpt"
    shutil.copytree(hf_dirs[variant][1], dst)
    return dst, load_file(str(dst / "model.safetensors"))


def test_missing_tensor_is_named(hf_dirs, tmp_path):
    path, tensors = _copy(hf_dirs, tmp_path)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensor model\.layers\.1\.mlp\.up_proj\.weight \(expected shape \(96, 64\)\)"):
        load_pretrained(path)


def test_unexpected_tensor_is_named(hf_dirs, tmp_path):
    path, tensors = _copy(hf_dirs, tmp_path)
    tensors["model.layers.0.mlp.extra.weight"] = np.zeros((3,), np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected tensor model\.layers\.0\.mlp\.extra\.weight \(shape \(3,\)\)"):
        load_pretrained(path)


def test_misshaped_tensor_names_both_shapes(hf_dirs, tmp_path):
    path, tensors = _copy(hf_dirs, tmp_path)
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((48, 64), np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight: checkpoint shape "
                                         r"\(48, 64\), expected \(32, 64\)"):
        load_pretrained(path)


def test_known_buffers_are_ignored(hf_dirs, tmp_path):
    path, tensors = _copy(hf_dirs, tmp_path)
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones((8,), np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    load_pretrained(path)


@pytest.mark.parametrize("keep", [4, 60, -100])
def test_truncated_safetensors_is_reported_as_truncated(hf_dirs, tmp_path, keep):
    path, _ = _copy(hf_dirs, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:keep])
    with pytest.raises(ValueError, match="truncated"):
        load_pretrained(path)


def test_sharded_checkpoint_with_missing_shard(hf_dirs, tmp_path):
    model, cfg = load_pretrained(hf_dirs["bigcode_mqa"][1])
    out = save_pretrained(model, cfg, tmp_path / "out", max_shard_size="50KB")
    victim = sorted(out.glob("*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        load_pretrained(out)


@pytest.mark.parametrize("change,message", [
    ({"model_type": "mistral"}, "supported: llama, gpt_bigcode"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type"),
    ({"hidden_act": "gelu"}, "hidden_act"),
])
def test_unsupported_config_is_named(hf_dirs, tmp_path, change, message):
    path, _ = _copy(hf_dirs, tmp_path)
    config = json.loads((path / "config.json").read_text())
    config.update(change)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_pretrained(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)


def test_dtype_sets_param_and_compute_dtype(hf_dirs):
    model, cfg = load_pretrained(hf_dirs["llama_tied_headdim_linear_rope"][1], dtype="bfloat16", remat_policy="full")
    assert (cfg.param_dtype, cfg.dtype, cfg.remat_policy) == ("bfloat16", "bfloat16", "full")
    assert {v.dtype for v in _params(model).values()} == {np.dtype(jax.numpy.bfloat16)}


@pytest.mark.parametrize("name", ["codellama_34b", "deepseek_coder_6_7b", "smollm2_135m", "starcoder_15b",
                                  "tiny_gpt_bigcode", "tiny_llama"])
def test_config_json_round_trip(name):
    from transformers import AutoConfig

    cfg = get_preset(name)
    hf = config_to_hf(cfg)
    assert config_from_hf(hf) == cfg
    loaded = AutoConfig.for_model(**hf)  # transformers reads the same architecture
    assert loaded.num_hidden_layers == cfg.num_layers and loaded.num_key_value_heads == cfg.num_kv_heads
    assert config_from_hf(loaded.to_dict()) == cfg


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("500MiB") == 500 * 2**20 and parse_size(123) == 123
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size("two gigs")


def test_bfloat16_checkpoint_loads_exactly_into_float32(tmp_path):
    import torch

    hf = F.hf_model("bigcode_mqa").to(torch.bfloat16)
    hf.save_pretrained(str(tmp_path))
    model, cfg = load_pretrained(tmp_path)
    assert cfg.param_dtype == "float32"
    ours = _params(model)
    np.testing.assert_array_equal(ours["wte"], hf.transformer.wte.weight.detach().float().numpy())
    np.testing.assert_array_equal(ours["layers.c_fc"][1], hf.transformer.h[1].mlp.c_fc.weight.detach().float().numpy().T)
