"""The SFT run, in sections: setup, data, state (fresh or resumed), the loop, the end.

Resume is exact: the data order depends only on (seed, step), the whole train state is in the
checkpoint, and metrics past the restored step are dropped, so a killed-and-restarted run ends
with the same parameters and loss trace as an uninterrupted one.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from ledex_jax.sharding import make_mesh, use_mesh
from ledex_jax.sft.data import SFTData
from ledex_jax.sft.train_step import make_eval_step, make_train_step
from ledex_jax.training import distributed
from ledex_jax.training.checkpointing import Checkpointer
from ledex_jax.training.metrics import MetricsLogger, peak_flops_per_device, train_flops_per_token
from ledex_jax.training.model_setup import load_model, load_tokenizer_for, resolve_model_path
from ledex_jax.training.optimizer import learning_rate_schedule, make_optimizer
from ledex_jax.training.preemption import Preemption
from ledex_jax.training.train_state import TrainState, batch_sharding, create_train_state, process_rows


def validate(cfg, mesh) -> None:
    """Config errors a user can make, raised before anything compiles."""
    t = cfg.train
    data_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if t.batch_size % t.grad_accum_steps:
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum_steps="
                         f"{t.grad_accum_steps}")
    if (t.batch_size // t.grad_accum_steps) % data_shards:
        raise ValueError(f"micro-batch {t.batch_size // t.grad_accum_steps} (train.batch_size / grad_accum_steps) "
                         f"is not divisible by the data-parallel size {data_shards} (mesh data x fsdp); change "
                         "train.batch_size, train.grad_accum_steps or mesh.shape")
    if t.batch_size % jax.process_count():
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by the {jax.process_count()} hosts")


def train(cfg, workdir: str | Path) -> dict:
    workdir = Path(workdir)
    # --- setup -------------------------------------------------------------------------
    distributed.maybe_initialize(cfg.distributed)
    mesh = make_mesh(tuple(cfg.mesh.shape))
    rules = tuple(cfg.mesh.rules)
    validate(cfg, mesh)
    b_sharding = batch_sharding(mesh, rules, cfg.train.batch_size)
    tokenizer = load_tokenizer_for(cfg)
    data = SFTData(cfg, tokenizer, process_rows(b_sharding, cfg.train.batch_size), workdir)
    model, model_cfg = load_model(cfg, mesh, tokenizer)
    if cfg.data.seq_len > model_cfg.max_position_embeddings:
        raise ValueError(f"data.seq_len={cfg.data.seq_len} exceeds the model's max_position_embeddings="
                         f"{model_cfg.max_position_embeddings}; lower data.seq_len (or, for a model built from a "
                         "preset, raise model.overrides.max_position_embeddings)")
    total_steps = cfg.train.num_steps if cfg.train.num_steps > 0 else cfg.train.num_epochs * data.steps_per_epoch
    optimizer = make_optimizer(cfg.train, total_steps)
    schedule = learning_rate_schedule(cfg.train, total_steps)
    graphdef, state, shardings = create_train_state(model, optimizer, mesh, rules)
    del model
    num_params = sum(x.size for x in jax.tree.leaves(state.params))

    # --- state: fresh or resumed -------------------------------------------------------
    ckpt = Checkpointer(workdir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.every_steps,
                        cfg.checkpoint.async_save)
    expected_meta = {"model_config": model_cfg.to_dict(), "batch_size": cfg.train.batch_size,
                     "seed": cfg.seed}
    meta = {**expected_meta, "tokenizer": resolve_model_path(cfg.tokenizer or cfg.model.checkpoint)}
    start = cfg.checkpoint.restore_step if cfg.checkpoint.restore_step >= 0 else (ckpt.latest_step() or 0)
    if start:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        items, _ = ckpt.restore(start, checkpoint_items(abstract), expected_meta)
        state = TrainState(items["params"], items["optimizer"]["opt_state"], items["optimizer"]["step"])
        logging.warning("resumed from %s at step %d", ckpt.directory, start)

    # --- the loop ------------------------------------------------------------------------
    train_step = jax.jit(make_train_step(graphdef, optimizer, cfg.train.grad_accum_steps),
                         in_shardings=(shardings, b_sharding), out_shardings=(shardings, None), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(graphdef), in_shardings=(shardings.params, b_sharding))
    global_shape = (cfg.train.batch_size, cfg.data.seq_len)
    to_global = lambda batch: jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(b_sharding, x, global_shape), batch)
    logger = MetricsLogger(workdir, resume_step=start)
    flops_per_token = train_flops_per_token(model_cfg, cfg.data.seq_len, num_params)
    peak = peak_flops_per_device(cfg.log.peak_flops_per_device)
    preemption = Preemption()
    last = {}
    with use_mesh(mesh, rules):
        batches = data.train_batches(start_step=start)
        bar = tqdm(range(start, total_steps), initial=start, total=total_steps, desc="sft",
                   disable=jax.process_index() != 0)
        t0, timed_steps = None, 0
        for step in bar:
            state, metrics = train_step(state, to_global(next(batches)))
            done = step + 1
            if t0 is None:  # the first step includes compilation: time from its end
                jax.block_until_ready(metrics)
                t0 = time.perf_counter()
            else:
                timed_steps += 1
            if done % cfg.log.every_steps == 0 or done == total_steps:
                metrics = jax.device_get(metrics)
                last = {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                        "learning_rate": float(schedule(step))}
                if timed_steps:  # tokens/s over the steps since the last log (rows are equally full on average)
                    last["tokens_per_s"] = float(metrics["tokens"]) * timed_steps / (time.perf_counter() - t0)
                    if peak:
                        last["mfu"] = last["tokens_per_s"] * flops_per_token / (peak * jax.device_count())
                if cfg.log.eval_every_steps and (done % cfg.log.eval_every_steps == 0 or done == total_steps):
                    last["eval_loss"] = evaluate(eval_step, state.params, data, to_global, cfg.log.eval_batches)
                logger.write(done, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
                t0, timed_steps = time.perf_counter(), 0
            ckpt.save(done, checkpoint_items(state), {**meta, "step": done}, force=done == total_steps)
            if preemption.requested:
                ckpt.wait()
                if ckpt.latest_step() != done:
                    ckpt.save(done, checkpoint_items(state), {**meta, "step": done}, force=True)
                logging.warning("preemption requested: saved step %d and stopping", done)
                break

    # --- the end -------------------------------------------------------------------------
    ckpt.close()
    logger.close()
    return {"step": int(jax.device_get(state.step)), **{k: float(v) for k, v in last.items()}}


def checkpoint_items(state: TrainState) -> dict:
    """Checkpoint layout: `params` alone (what export reads) and `optimizer` (moments + step)."""
    return {"params": state.params, "optimizer": {"opt_state": state.opt_state, "step": state.step}}


def evaluate(eval_step, params, data: SFTData, to_global, max_batches: int) -> float:
    loss_sum, count = 0.0, 0.0
    for i, batch in enumerate(data.eval_batches()):
        if i >= max_batches:
            break
        out = jax.device_get(eval_step(params, to_global(batch)))
        loss_sum, count = loss_sum + float(out["loss_sum"]), count + float(out["count"])
    return loss_sum / max(count, 1.0) if count else float(np.nan)
