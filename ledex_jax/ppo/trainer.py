"""The PPO run (`python scripts/train.py --config=configs/rl.py`), in sections: setup, data,
rewards, state (fresh or resumed), the loop, the end.

Resume is exact: batch rows, formats, sampling and PPO minibatch order depend only on
(seed, step); the checkpoint holds the policy (`params`, what the HF export reads), the value head,
the optimizer and, in its meta record, the KL coefficient; metrics past the restored step are
dropped. A run killed after a checkpoint and restarted with the same command ends with the same
metrics trace and parameters as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from ledex_jax.ppo import data as rl_data
from ledex_jax.ppo import rollout
from ledex_jax.ppo.learner import PPOLearner
from ledex_jax.ppo.policy import with_value_head
from ledex_jax.sharding import make_mesh
from ledex_jax.training import distributed
from ledex_jax.training.checkpointing import Checkpointer
from ledex_jax.training.metrics import MetricsLogger
from ledex_jax.training.model_setup import load_model, load_tokenizer_for, resolve_model_path
from ledex_jax.training.optimizer import make_optimizer
from ledex_jax.training.preemption import Preemption
from ledex_jax.training.train_state import TrainState


def validate(cfg, mesh) -> None:
    """Config errors a user can make, raised before anything compiles."""
    t, p = cfg.train, cfg.ppo
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if t.batch_size % p.minibatch_size:
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by ppo.minibatch_size={p.minibatch_size}")
    if p.minibatch_size % t.grad_accum_steps or (p.minibatch_size // t.grad_accum_steps) % shards:
        raise ValueError(f"ppo.minibatch_size={p.minibatch_size} / train.grad_accum_steps={t.grad_accum_steps} must "
                         f"be a whole multiple of the data-parallel size {shards} (mesh data x fsdp)")
    fb = p.forward_batch_size or t.batch_size
    if t.batch_size % fb or fb % shards:
        raise ValueError(f"ppo.forward_batch_size={fb} must divide train.batch_size={t.batch_size} and be a multiple "
                         f"of the data-parallel size {shards}")
    if t.batch_size % shards:
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by the data-parallel size {shards}")
    if cfg.rollout.mode not in ("online", "offline"):
        raise ValueError(f"rollout.mode={cfg.rollout.mode!r}; choose 'online' or 'offline'")
    from ledex_jax.ppo.losses import KL_KINDS
    if p.kl_penalty not in KL_KINDS:
        raise ValueError(f"ppo.kl_penalty={p.kl_penalty!r}; choose one of {', '.join(KL_KINDS)}")
    if p.kl_control not in ("adaptive", "fixed"):
        raise ValueError(f"ppo.kl_control={p.kl_control!r}; choose 'adaptive' or 'fixed'")


class RLPrompts:
    """The RL rows with their prompt tokens in every format; rows whose prompt does not fit
    rollout.max_prompt_len (or leaves no room for max_new_tokens) are skipped and counted."""

    def __init__(self, rows, formats, style, tokenizer, max_prompt_len, max_positions, max_new, report):
        self.formats, self.rows, self.ids = formats, [], []
        limit = min(max_prompt_len, max_positions - max_new)
        for row in rows:
            ids = {f: rollout.prompt_ids(row, f, style, tokenizer) for f in formats}
            longest = max(map(len, ids.values()))
            if longest > limit:
                report.skip(f"with a prompt over {limit} tokens (rollout.max_prompt_len, or the model's "
                            "max_position_embeddings minus rollout.max_new_tokens)", row.id)
                continue
            self.rows.append(row)
            self.ids.append(ids)
        report.rows = len(self.rows)
        if not self.rows:
            raise rl_data.RLDataError(f"no RL row fits the prompt budget: {report.summary()}; raise "
                                      "config.rollout.max_prompt_len")

    def batch(self, step: int, batch_size: int, seed: int):
        """(rows, formats, prompt ids, draw numbers) of global batch `step`."""
        index = rl_data.batch_indices(len(self.rows), batch_size, step, seed)
        draws = np.arange(step * batch_size, (step + 1) * batch_size)
        formats = [self.formats[d % len(self.formats)] for d in draws]
        return ([self.rows[i] for i in index], formats, [self.ids[i][f] for i, f in zip(index, formats)], draws)


def make_reward(cfg, tokenizer):
    """The execution pool, the embedder and the LeDex reward over them."""
    import os

    from executors import ExecutionPool
    from ledex_jax.ppo.embedder import load_embedder
    from ledex_jax.ppo.ledex_reward import LedexReward
    from ledex_jax.ppo.scoring import RewardScorer

    e = cfg.execute
    pool = ExecutionPool(workers=e.workers or os.cpu_count(), per_test_timeout=e.per_test_timeout,
                         memory_mb=e.memory_mb, sandbox=e.sandbox, allow_unsandboxed=e.allow_unsandboxed)
    scorer = RewardScorer(pool, load_embedder(cfg.rewards.embedder),
                          clip_explanation_reward=cfg.rewards.clip_explanation_reward,
                          echo_penalty=cfg.rewards.echo_penalty)
    decode = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)
    return LedexReward(scorer, decode), pool


def train(cfg, workdir: str | Path) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # --- setup -------------------------------------------------------------------------
    distributed.maybe_initialize(cfg.distributed)
    mesh = make_mesh(tuple(cfg.mesh.shape))
    rules = tuple(cfg.mesh.rules)
    validate(cfg, mesh)
    tokenizer = load_tokenizer_for(cfg)
    lm, model_cfg = load_model(cfg, mesh, tokenizer)
    r = cfg.rollout

    # --- data --------------------------------------------------------------------------
    report = rl_data.DataReport()
    rows = rl_data.load_rows(cfg.data, report)
    prompts = RLPrompts(rows, rollout.parse_formats(r.formats), cfg.data.style, tokenizer, r.max_prompt_len,
                        model_cfg.max_position_embeddings, r.max_new_tokens, report)
    if jax.process_index() == 0:
        (workdir / "rl_data_report.json").write_text(json.dumps(report.to_json(), indent=1))
    logging.warning("RL data: %s", report.summary())
    total_steps = cfg.train.num_steps if cfg.train.num_steps > 0 else max(
        1, cfg.train.num_epochs * len(prompts.rows) // cfg.train.batch_size)

    # --- state: fresh or resumed -------------------------------------------------------
    policy = with_value_head(lm, cfg.seed, cfg.ppo.value_head_std)
    optimizer = make_optimizer(cfg.train, total_steps)
    buckets = sorted({int(b) for b in str(r.prompt_buckets).split(",") if b.strip()} | {r.max_prompt_len})
    sampler_args = dict(max_prompt_len=r.max_prompt_len, max_batch=r.max_batch or None,
                        prompt_buckets=[b for b in buckets if b <= r.max_prompt_len])
    learner = PPOLearner(policy, optimizer, mesh, rules, cfg.ppo, cfg.train.batch_size, tokenizer, sampler_args,
                         cfg.train.grad_accum_steps, tuple(r.mesh_shape))
    del lm, policy
    ckpt = Checkpointer(workdir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.every_steps,
                        cfg.checkpoint.async_save)
    expected_meta = {"model_config": model_cfg.to_dict(), "batch_size": cfg.train.batch_size, "seed": cfg.seed,
                     "trainer": "ppo"}
    meta = {**expected_meta, "tokenizer": resolve_model_path(cfg.tokenizer or cfg.model.checkpoint)}
    start = cfg.checkpoint.restore_step if cfg.checkpoint.restore_step >= 0 else (ckpt.latest_step() or 0)
    if start:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                                learner.state)
        items, saved = ckpt.restore(start, checkpoint_items(abstract), expected_meta)
        learner.state = from_items(items, learner.state)
        learner.beta = float(saved["kl_coef"])
        learner.refresh_sampler()
        logging.warning("resumed from %s at step %d", ckpt.directory, start)

    # --- rewards -------------------------------------------------------------------------
    reward, pool = make_reward(cfg, tokenizer)
    stop = rollout.stop_strings(cfg.data.style)

    # --- the loop ------------------------------------------------------------------------
    logger = MetricsLogger(workdir, resume_step=start)
    preemption = Preemption()
    last, done = {}, start
    bar = tqdm(range(start, total_steps), initial=start, total=total_steps, desc="ppo",
               disable=jax.process_index() != 0)
    try:
        for step in bar:
            rows_b, formats, ids, draws = prompts.batch(step, cfg.train.batch_size, cfg.seed)
            # this host's rows of the global batch: it samples and scores only these
            rows_b, formats, ids, draws = ([x[i] for i in learner.rows] for x in (rows_b, formats, ids, draws))
            seed = int(np.random.default_rng([cfg.seed, step]).integers(2 ** 31))
            t0 = time.perf_counter()
            if r.mode == "online":
                out = learner.generate(ids, seed=seed, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                       top_p=r.top_p, top_k=r.top_k, stop=stop, row_ids=learner.rows)
            else:
                out = rollout.offline_output(rows_b, formats, draws, cfg.data.style, tokenizer, ids,
                                             learner.sampler.bucket(max(map(len, ids))), r.max_new_tokens,
                                             learner.sampler.pad_id, cfg.seed, step)
            generate_s = time.perf_counter() - t0
            metrics = learner.step(out, lambda o: reward.submit(o, rows_b, formats), seed)
            step_s = time.perf_counter() - t0
            metrics.update(generate_s=generate_s, step_s=step_s,
                           tokens_per_s=metrics["response_tokens"] / step_s)
            done = step + 1
            last = metrics
            if done % cfg.log.every_steps == 0 or done == total_steps:
                logger.write(done, metrics)
                bar.write(step_line(done, metrics))
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.3f}",
                            pass_rate=f"{metrics.get('pass_rate', float('nan')):.2f}")
            ckpt.save(done, checkpoint_items(learner.state), {**meta, "step": done, "kl_coef": learner.beta},
                      force=done == total_steps)
            if preemption.requested:
                ckpt.wait()
                if ckpt.latest_step() != done:
                    ckpt.save(done, checkpoint_items(learner.state), {**meta, "step": done, "kl_coef": learner.beta},
                              force=True)
                logging.warning("preemption requested: saved step %d and stopping", done)
                break
    finally:
        # --- the end -------------------------------------------------------------------------
        bar.close()
        ckpt.close()
        logger.close()
        reward.close()
        pool.close()
    return {"step": done, **{k: float(v) for k, v in last.items()}}


def step_line(step: int, m: dict) -> str:
    """One line per step; the explanation reward is a mean over the rollouts that had one
    scored (NaN: none had, e.g. refine-format prompts or no code found), shown as "none"."""
    expl = m["explanation_reward"]
    expl = "none" if math.isnan(expl) else f"{expl:+.3f}"
    return (f"step {step}: reward {m['reward']:+.3f} (code {m['code_reward']:+.3f}, explanation "
            f"{expl}) pass rate {m.get('pass_rate', float('nan')):.2f} KL {m['kl']:.4f} "
            f"beta {m['beta']:.4f} | generate {m['generate_s']:.1f}s score {m['score_s']:.1f}s "
            f"({100 * m['scoring_hidden']:.0f}% hidden) rescore {m['stats_s']:.1f}s train {m['train_s']:.1f}s")


def checkpoint_items(state: TrainState) -> dict:
    """`params` = the language model alone (what export reads), `value_head`, `optimizer`."""
    return {"params": state.params["lm"], "value_head": state.params["value_head"],
            "optimizer": {"opt_state": state.opt_state, "step": state.step}}


def from_items(items: dict, like: TrainState) -> TrainState:
    """The restored arrays in the train state's own pytree types (orbax may return plain dicts)."""
    params = jax.tree.unflatten(jax.tree.structure(like.params),
                                jax.tree.leaves({"lm": items["params"], "value_head": items["value_head"]}))
    return TrainState(params, items["optimizer"]["opt_state"], items["optimizer"]["step"])
