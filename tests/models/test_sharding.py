"""Loading onto a mesh (8 virtual CPU devices; meshes (2,2,2) and (1,4,2) over data, fsdp,
tensor): parameters are laid out as the rules table says, each device reads only its own block
of each checkpoint tensor, and the sharded forward equals the single-device forward."""
import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import hf_fixtures as F
from ledex_jax.models import load_pretrained, parity
from ledex_jax.models.checkpoint_io import place
from ledex_jax.models.hf_config import config_from_hf
from ledex_jax.models.safetensors_io import SafetensorsReader
from ledex_jax.sharding import DEFAULT_RULES, logical_to_spec, make_mesh, use_mesh

MESHES = [(2, 2, 2), (1, 4, 2)]
VARIANTS = ["llama_gqa_untied_bias", "bigcode_mqa", "bigcode_mha"]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    assert jax.device_count() == 8, "tests/conftest.py should give 8 virtual CPU devices"
    out = {}
    for variant in VARIANTS:
        path = tmp_path_factory.mktemp(variant)
        F.save_hf(variant, path)
        out[variant] = path
    return out


def _params(model):
    return {".".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _batch(rows=8, seed=0):
    rng = np.random.default_rng(seed)
    return parity.left_pad([rng.integers(3, 128, n).tolist() for n in range(3, 3 + rows)], pad_id=0)


@pytest.mark.parametrize("mesh_shape", MESHES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sharded_forward_equals_single_device(variant, mesh_shape, hf_dirs):
    single, _ = load_pretrained(hf_dirs[variant])
    mesh = make_mesh(mesh_shape)
    sharded, _ = load_pretrained(hf_dirs[variant], mesh=mesh)
    ids, mask = _batch()
    expected = parity.jax_logits(single, ids, mask)
    with use_mesh(mesh):
        got = parity.jax_logits(sharded, ids, mask)
    assert parity.max_logit_diff(got, expected, mask) <= 1e-4  # only the summation order differs


@pytest.mark.parametrize("variant", VARIANTS)
def test_sharded_forward_does_not_replicate_activations(variant, hf_dirs, capfd):
    """XLA's partitioner logs (to stderr, from C++) when it must replicate a tensor whole to
    reshard it; the embedding lookup used to do that with the embed dim fsdp-sharded."""
    mesh = make_mesh((2, 2, 2))
    model, _ = load_pretrained(hf_dirs[variant], mesh=mesh)
    # [4, 11]: a shape no other test compiles, so the partitioner runs (and logs) here
    ids, mask = parity.left_pad([[5] * 11, [6] * 2, [7] * 9, [8] * 4], pad_id=0)
    capfd.readouterr()
    with use_mesh(mesh):
        parity.jax_logits(model, ids, mask)
    assert "Involuntary full rematerialization" not in capfd.readouterr().err


@pytest.mark.parametrize("mesh_shape", MESHES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_parameters_follow_the_rules_table(variant, mesh_shape, hf_dirs):
    mesh = make_mesh(mesh_shape)
    model, cfg = load_pretrained(hf_dirs[variant], mesh=mesh)
    for key, var in _params(model).items():
        value = var.get_value()
        want = logical_to_spec(var.get_metadata()["axes"], DEFAULT_RULES, mesh, value.shape)
        assert value.sharding.spec == want, key
    params = {k: v.get_value() for k, v in _params(model).items()}
    # The table spelled out: embed -> fsdp; heads, kv_heads, mlp, vocab -> tensor; layers, norms replicated.
    assert params["layers.q_proj"].sharding.spec == P(None, "fsdp", "tensor", None)
    assert params["layers.o_proj"].sharding.spec == P(None, "tensor", None, "fsdp")
    kv = P(None, "fsdp", None if cfg.num_kv_heads == 1 else "tensor", None)  # one MQA head: replicated
    assert params["layers.k_proj"].sharding.spec == kv
    if variant.startswith("llama"):
        assert params["embed_tokens"].sharding.spec == P("tensor", "fsdp")
        assert params["lm_head"].sharding.spec == P("fsdp", "tensor")
        assert params["layers.down_proj"].sharding.spec == P(None, "tensor", "fsdp")
        assert params["layers.input_layernorm"].sharding.spec == P(None, None)
    else:
        assert params["wte"].sharding.spec == P("tensor", "fsdp")
        assert params["wpe"].sharding.spec == P(None, "fsdp")
        assert params["layers.c_fc"].sharding.spec == P(None, "fsdp", "tensor")
    q = params["layers.q_proj"]
    fsdp, tensor = mesh.shape["fsdp"], mesh.shape["tensor"]
    assert q.addressable_shards[0].data.shape == (cfg.num_layers, cfg.hidden_size // fsdp,
                                                  cfg.num_heads // tensor, cfg.dim_per_head)


def test_each_device_reads_only_its_block(hf_dirs):
    path = hf_dirs["bigcode_mha"]
    import json
    cfg = config_from_hf(json.loads((path / "config.json").read_text()))
    reads = []
    with SafetensorsReader(path) as reader:
        def read(name, index):
            block = reader.read(name, index)
            reads.append((name, block.size, int(np.prod(reader.shape(name)))))
            return block

        place(cfg, read, make_mesh((1, 4, 2)))
    fused = [(size, total) for name, size, total in reads if name.endswith("attn.c_attn.weight")]
    # multi-head c_attn interleaves q|k|v per head: a device reads its heads' rows (1/2) x its columns (1/4)
    assert fused and all(size * 8 == total for size, total in fused)
    embed = [(size, total) for name, size, total in reads if name == "transformer.wte.weight"]
    assert embed and all(size * 8 == total for size, total in embed)


def test_export_from_a_sharded_model_equals_single_device_export(hf_dirs, tmp_path):
    from safetensors.numpy import load_file

    from ledex_jax.models import save_pretrained

    single, cfg = load_pretrained(hf_dirs["llama_gqa_untied_bias"])
    sharded, _ = load_pretrained(hf_dirs["llama_gqa_untied_bias"], mesh=make_mesh((2, 2, 2)))
    a = save_pretrained(single, cfg, tmp_path / "single", max_shard_size="100KB")
    b = save_pretrained(sharded, cfg, tmp_path / "sharded", max_shard_size="100KB")
    files = sorted(p.name for p in a.glob("*.safetensors"))
    assert files == sorted(p.name for p in b.glob("*.safetensors")) and len(files) > 1
    for name in files:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
