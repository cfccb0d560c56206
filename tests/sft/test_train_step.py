"""The SFT step: exact gradient accumulation, sharded == single-device, and it can overfit."""
import jax
import numpy as np
import optax
import pytest

from ledex_jax.models import build_model, get_preset
from ledex_jax.sharding import make_mesh
from ledex_jax.sft.train_step import make_train_step
from ledex_jax.training.train_state import batch_sharding, create_train_state


def synthetic_batch(batch=8, length=32, vocab=256, seed=0):
    """Rows whose second half is the answer (loss-masked); row 1 is packed with two segments."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(3, vocab, (batch, length)).astype(np.int32)
    segment_ids = np.ones((batch, length), np.int32)
    segment_ids[1, length // 2:] = 2
    segment_ids[2, -4:] = 0  # right padding
    positions = np.tile(np.arange(length), (batch, 1)).astype(np.int32)
    positions[1, length // 2:] -= length // 2
    loss_mask = np.zeros((batch, length), np.float32)
    loss_mask[:, length // 4: length // 2 - 1] = 1
    loss_mask[:, 3 * length // 4: -5] = 1
    loss_mask[5, 3 * length // 4:] = 0  # micro-batches differ in answer tokens: a mean of means is wrong
    return dict(inputs=inputs, targets=np.roll(inputs, -1, 1), loss_mask=loss_mask,
                segment_ids=segment_ids, positions=positions)


def one_step(mesh, accum, batch, model_cfg=None, opt=None):
    opt = opt or optax.adamw(1e-3)
    graphdef, state, shardings = create_train_state(build_model(model_cfg or get_preset("tiny_llama")), opt, mesh)
    step = jax.jit(make_train_step(graphdef, opt, accum), in_shardings=(shardings, batch_sharding(mesh)),
                   out_shardings=(shardings, None), donate_argnums=0)
    state, metrics = step(state, batch)
    return jax.device_get(state.params), jax.device_get(metrics)


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def single_device_result():
    return one_step(make_mesh((1, 1, 1), devices=jax.devices()[:1]), 1, synthetic_batch())


def test_gradient_accumulation_is_exact(single_device_result):
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    params, metrics = one_step(mesh, 4, synthetic_batch())
    ref_params, ref_metrics = single_device_result
    assert abs(metrics["loss"] - ref_metrics["loss"]) < 1e-6
    assert metrics["answer_tokens"] == ref_metrics["answer_tokens"]
    # Adam's first step is ~lr * sign(g): near-zero gradients amplify summation-order noise.
    assert max_diff(params, ref_params) < 1e-5
    # The gradients themselves (SGD with lr 1: update = -grad) agree to float32 rounding.
    sgd = optax.sgd(1.0)
    grads4 = one_step(mesh, 4, synthetic_batch(), opt=sgd)[0]
    grads1 = one_step(mesh, 1, synthetic_batch(), opt=sgd)[0]
    assert max_diff(grads4, grads1) < 1e-6


@pytest.mark.parametrize("mesh_shape", [(1, 4, 2), (2, 4, 1)], ids=["fsdp4xtensor2", "data2xfsdp4"])
def test_sharded_step_equals_single_device(single_device_result, mesh_shape):
    mesh = make_mesh(mesh_shape)
    params, metrics = one_step(mesh, 1, synthetic_batch())
    ref_params, ref_metrics = single_device_result
    assert abs(metrics["loss"] - ref_metrics["loss"]) < 1e-5
    assert max_diff(params, ref_params) < 1e-5


def test_mesh_that_does_not_divide_heads_names_the_param():
    cfg = get_preset("tiny_llama", num_heads=6, num_kv_heads=3, hidden_size=48)
    with pytest.raises(ValueError, match=r"layers/[qkv]_proj: dimension 2 \((kv_)?heads.*not divisible"):
        create_train_state(build_model(cfg), optax.adamw(1e-3), make_mesh((1, 2, 4)))


def test_tiny_model_overfits_32_examples():
    """32 examples (prompt + answer), answer-only loss: memorised to < 0.05 nats per answer token."""
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    opt = optax.adam(1e-2)
    batch = synthetic_batch(batch=32, length=32, seed=1)
    graphdef, state, shardings = create_train_state(build_model(get_preset("tiny_llama")), opt, mesh)
    step = jax.jit(make_train_step(graphdef, opt, 1), donate_argnums=0)
    for _ in range(150):
        state, metrics = step(state, batch)
    assert float(metrics["loss"]) < 0.05, float(metrics["loss"])
