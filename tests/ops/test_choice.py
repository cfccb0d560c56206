"""`ops.select`: the documented table, with the platform and the CPU faked at the seam."""
import jax
import pytest

from configs.sft import get_config
from ledex_jax import ops as O
from ledex_jax.models import get_preset
from ledex_jax.sharding import make_mesh
from ledex_jax.training.model_setup import load_model

EVERY_KERNEL = lambda name: True
NO_KERNEL = lambda name: False
AVX512_ONLY = lambda name: name in ("f32_matmul", "decode_attention")


def test_auto_on_tpu_uses_pallas_attention():
    ops = O.select("auto", "bfloat16", platform="tpu", mesh_devices=256)
    assert (ops.attention, ops.interpret, ops.matmul, ops.cache_attention) == ("pallas", False, "xla", "xla")


@pytest.mark.parametrize("dtype,attention", [("bfloat16", "cudnn"), ("float16", "cudnn"), ("float32", "xla")])
def test_auto_on_gpu_uses_cudnn_for_half_precision(dtype, attention):
    assert O.select("auto", dtype, platform="gpu").attention == attention
    assert O.select("cudnn", dtype, platform="gpu").attention == "cudnn"


def test_auto_on_cpu_takes_each_kernel_this_cpu_runs():
    amx = O.select("auto", "bfloat16", platform="cpu", mesh_devices=1, cpu_kernel_available=EVERY_KERNEL)
    assert (amx.attention, amx.matmul, amx.lm_head, amx.cache_attention, amx.decode_matmul) == \
        ("cpu", "cpu", "cpu", "cpu", "amx")
    zen4 = O.select("auto", "bfloat16", platform="cpu", mesh_devices=1, cpu_kernel_available=AVX512_ONLY)
    assert (zen4.attention, zen4.matmul, zen4.lm_head, zen4.cache_attention, zen4.decode_matmul) == \
        ("xla", "xla", "xla", "cpu", "xla")
    f32 = O.select("cpu", "float32", platform="cpu", mesh_devices=1, cpu_kernel_available=AVX512_ONLY)
    assert (f32.attention, f32.matmul, f32.cache_attention, f32.decode_matmul) == ("xla", "xla", "cpu", "f32")
    assert O.select("auto", "bfloat16", platform="cpu", mesh_devices=1, cpu_kernel_available=NO_KERNEL) == O.Ops("cpu")


def test_cpu_kernels_stay_out_of_multi_device_programs():
    assert O.select("auto", "bfloat16", platform="cpu", mesh_devices=8, cpu_kernel_available=EVERY_KERNEL) == O.Ops("cpu")


def test_explicit_choices():
    assert O.select("xla", "bfloat16", platform="tpu") == O.Ops("tpu")
    assert O.select("pallas", platform="cpu").attention == "pallas" and O.select("pallas", platform="cpu").interpret
    assert not O.select("pallas", platform="tpu").interpret
    with pytest.raises(ValueError, match="kernels='cudnn' needs a GPU backend, this one is 'cpu'"):
        O.select("cudnn", platform="cpu")
    with pytest.raises(ValueError, match="kernels='cpu' needs the CPU backend, this one is 'tpu'"):
        O.select("cpu", platform="tpu")
    with pytest.raises(ValueError, match="kernels='triton'; choose one of"):
        O.select("triton")


def test_model_config_validates_kernels():
    assert get_preset("tiny_llama").kernels == "auto"
    with pytest.raises(ValueError, match="kernels='tpu'; choose one of"):
        get_preset("tiny_llama", kernels="tpu")


def test_trainer_config_key_reaches_the_model():
    """`--config.model.kernels=...` in a trainer config sets ModelConfig.kernels."""
    cfg = get_config("tiny")
    assert cfg.model.kernels == "auto"
    cfg.model.kernels = "xla"
    model, model_cfg = load_model(cfg, make_mesh((1, 1, 1), devices=jax.devices()[:1]))
    assert model_cfg.kernels == "xla" and model.ops() == O.Ops("cpu")
    cfg.model.kernels = "tpu"
    with pytest.raises(ValueError, match="kernels='tpu'; choose one of"):
        load_model(cfg, make_mesh((1, 1, 1), devices=jax.devices()[:1]))
