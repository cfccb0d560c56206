"""The PPO learner: generate with the JAX sampler, rescore on the device while the rewards are
computed on the CPU, then PPO epochs over minibatches (TRL v0.8.6 semantics, LEDEX.md §3).

One `step`:
1. rollout: the `Sampler` (the policy's current weights) samples responses; or the caller passes
   collected responses (offline mode). Each row is [prompt | response] as the sampler laid it out.
2. score + stats, overlapped: `score_fn(out)` returns a Future (the execution pool, CodeBLEU and
   the embedder run on the host) while the device computes the policy's log-probs and values, the
   frozen reference's log-probs, the per-token KL and the entropy of the same rows.
3. advantages: −β·KL per token, R(e) at the last explanation token, R(r) at the last token,
   GAE (γ, λ), whitened advantages (`rewards.place_rewards`, `advantages.gae`).
4. PPO epochs: seeded permutations into minibatches, each one optimizer update with exact gradient
   accumulation over micro-batches (`training.train_step`); a minibatch whose mean ratio exceeds
   `ratio_threshold` contributes no gradient (TRL). With `ppo.trim_prompts` the micro-batches of
   steps 2 and 4 group rows of similar prompt length and drop the prompt columns they all pad
   (`micro_batches.py`): the same numbers, fewer FLOPs, a few more programs.
5. the adaptive KL controller updates β; the sampler takes the new weights (no recompilation).
Rows whose reward is not finite are counted and masked out of the update, never trained on.

On several hosts each host samples and scores only its own rows of the global batch, on a
replica of the policy on its local devices (`hosts.py`); rescoring and training run on the
global mesh. A 2-host run gives the rollouts, metrics and weights of a 1-host run.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ledex_jax import ops as O
from ledex_jax.ppo import advantages as A
from ledex_jax.ppo import hosts
from ledex_jax.ppo import losses as L
from ledex_jax.ppo.kl_control import kl_update
from ledex_jax.ppo.micro_batches import length_groups
from ledex_jax.ppo.policy import PolicyWithValue, response_hidden, response_log_probs
from ledex_jax.ppo.rewards import place_rewards
from ledex_jax.sampling import Sampler
from ledex_jax.sampling.sampler import SampleOutput, default_buckets
from ledex_jax.sharding import spec_devices, use_mesh
from ledex_jax.training.train_state import batch_sharding, create_train_state, process_rows
from ledex_jax.training.train_step import Accumulation, make_train_step, split_microbatches

ROLLOUT_KEYS = ("input_ids", "attention_mask", "positions")


@dataclasses.dataclass
class RewardBatch:
    """What a reward function returns for the N rows of a rollout."""
    code_reward: np.ndarray         # [N] R(r), placed on the last response token; NaN = unscorable row
    explanation_reward: np.ndarray  # [N] R(e); ignored where explanation_end is -1
    explanation_end: np.ndarray     # [N] int, index of the last explanation token, -1 = none
    # per-row statistics to log ([N] arrays, NaN where a row has no value): the learner logs the
    # mean of each over the finite entries of every host's rows
    metrics: dict = dataclasses.field(default_factory=dict)


def merge_microbatches(x):
    """Inverse of `split_microbatches`: [k, B / k, ...] -> [B, ...]."""
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


class PPOLearner:
    """Holds the train state (policy + value head, optimizer), the frozen reference and the sampler.

    Args:
      policy: `PolicyWithValue` (its `lm` is also the reference: copied once, never updated).
      ppo: config.ppo (epochs, minibatch_size, cliprange, ..., see configs/rl.py).
      batch_size: rollout rows per step (global).
      sampler_args: keyword arguments for `Sampler` (max_prompt_len, max_batch, ...).
      sample_mesh_shape: each host's rollout mesh over its local devices (several hosts only; one
        host samples on `mesh`).
    """

    def __init__(self, policy: PolicyWithValue, optimizer, mesh, rules, ppo, batch_size: int, tokenizer=None,
                 sampler_args: dict | None = None, grad_accum_steps: int = 1, sample_mesh_shape=(1, -1, 1)):
        self.mesh, self.rules, self.ppo, self.batch_size = mesh, tuple(rules), ppo, batch_size
        self.grad_accum_steps, self._optimizer = grad_accum_steps, optimizer
        self.lm_graphdef = nnx.split(policy.lm, nnx.Param)[0]
        self.graphdef, self.state, self.shardings = create_train_state(policy, optimizer, mesh, self.rules)
        ref_dtype = jnp.dtype(ppo.reference_dtype) if ppo.reference_dtype else None
        copy = lambda p: jax.tree.map(lambda x: x.astype(ref_dtype) if ref_dtype and jnp.issubdtype(
            x.dtype, jnp.floating) else x, p)  # jit outputs never alias its inputs: a true copy
        self.ref_params = jax.jit(copy, out_shardings=self.shardings.params["lm"])(self.state.params["lm"])
        self.beta = float(ppo.init_kl_coef)
        self.sharding = batch_sharding(mesh, self.rules, batch_size)
        self.rows = process_rows(self.sharding, batch_size)  # this host's rows of every global batch
        self.replica = hosts.LocalReplica(sample_mesh_shape, self.rules) if hosts.multihost() else None
        self.sample_mesh = self.replica.mesh if self.replica else mesh
        lm = self.sampler_lm()
        with use_mesh(self.sample_mesh, self.rules):
            self.sampler = Sampler(lm, tokenizer, mesh=self.sample_mesh, rules=self.rules,
                                   **(sampler_args or {}))
        self._stats = {}  # jitted per response length
        self._advantages = jax.jit(self._advantages_fn, out_shardings=(self.sharding, self.sharding, None))
        self._train = {}
        self._cuts, self._grouped = {}, {}  # micro-batches cut to their prompts' width (`micro_batches.py`)
        self._assemble = jax.jit(lambda parts, order: jax.tree.map(lambda *x: jnp.concatenate(x)[order], *parts),
                                 out_shardings=self.sharding)

    # --- weights ---------------------------------------------------------------------------
    def lm(self):
        """The policy's language model with the current weights."""
        return nnx.merge(self.lm_graphdef, self.state.params["lm"])

    def sampler_lm(self):
        """The current policy where this host samples: the global model, or its local replica."""
        if self.replica is None:
            return self.lm()
        return nnx.merge(self.lm_graphdef, self.replica(self.state.params["lm"]))

    def refresh_sampler(self) -> None:
        self.sampler.update_params(self.sampler_lm())

    # --- device programs -------------------------------------------------------------------
    def _stats_one(self, response_len: int):
        """(params, ref_params, rows) -> the policy's and reference's statistics of the rows."""
        ppo, graphdef, lm_graphdef = self.ppo, self.graphdef, self.lm_graphdef
        full = ppo.kl_penalty == "full"

        def one(params, ref_params, mb):
            policy, ref = nnx.merge(graphdef, params), nnx.merge(lm_graphdef, ref_params)
            args = [mb[k] for k in ROLLOUT_KEYS]
            hidden, tokens = response_hidden(policy.lm, *args, response_len)
            ref_hidden, _ = response_hidden(ref, *args, response_len)
            logits = policy.lm.logits(hidden) if (full or ppo.log_entropy) else None
            # one LM-head product: the log-probs come from the logits when the entropy needs them
            logprobs = (response_log_probs(policy.lm, hidden, tokens) if logits is None
                        else O.token_log_probs(logits, tokens))
            ref_logprobs = response_log_probs(ref, ref_hidden, tokens)
            kl = L.kl_penalty(logprobs, ref_logprobs, ppo.kl_penalty, logits,
                              ref.logits(ref_hidden) if full else None)
            entropy = L.entropy_from_logits(logits) if ppo.log_entropy else jnp.zeros_like(logprobs)
            return {"logprobs": logprobs, "ref_logprobs": ref_logprobs, "values": policy.value_head(hidden), "kl": kl,
                    "entropy": entropy}

        return one

    def _stats_fn(self, response_len: int):
        one = self._stats_one(response_len)

        def stats(params, ref_params, batch):
            micro = split_microbatches(batch, self.forward_micro)
            out = jax.lax.map(lambda mb: one(params, ref_params, mb), micro)
            return jax.tree.map(merge_microbatches, out)

        return jax.jit(stats, out_shardings=self.sharding)

    def _grouped_stats(self, m: int, batch, prompt_lens: np.ndarray, width: int):
        """The statistics of `_stats_fn`, computed per micro-batch of similar prompt length with
        the columns its rows all pad cut off (one program per kept width)."""
        if ("stats", m) not in self._grouped:
            self._grouped["stats", m] = jax.jit(self._stats_one(m))
        one, parts, order = self._grouped["stats", m], [], []
        for rows, keep in length_groups(np.arange(self.batch_size), prompt_lens,
                                        self.batch_size // self._forward_rows, width, self.trim_widths(width)):
            parts.append(one(self.state.params, self.ref_params, self._cut(batch, rows, width - keep)))
            order.append(rows)
        return self._assemble(parts, np.argsort(np.concatenate(order)))

    def trim_widths(self, width: int) -> tuple[int, ...]:
        """Prompt widths a micro-batch may be cut to: none when `ppo.trim_prompts` is off, or
        when a micro-batch's rows do not split evenly over the batch's devices (each cut
        micro-batch is laid out on its own; the one-program path handles uneven splits)."""
        shards = spec_devices(self.mesh, self.sharding.spec[0])
        if not self.ppo.trim_prompts or self._micro_rows % shards or self._forward_rows % shards:
            return (width,)
        return default_buckets(width)

    @property
    def _micro_rows(self) -> int:
        """Rows of one training micro-batch."""
        return self.ppo.minibatch_size // self.grad_accum_steps

    @property
    def _forward_rows(self) -> int:
        """Rows of one cut rescoring forward: at most forward_batch_size, and no more than a
        training micro-batch (more groups, less padding)."""
        return min(self.batch_size // self.forward_micro, self._micro_rows)

    def _cut(self, batch, rows: np.ndarray, start: int):
        """Rows `rows` of a global batch, without the first `start` prompt columns."""
        if len(rows) not in self._cuts:
            def cut(batch, rows, start):
                return {k: x[rows, start:] if k in ROLLOUT_KEYS else x[rows] for k, x in batch.items()}
            self._cuts[len(rows)] = jax.jit(cut, static_argnums=2,
                                            out_shardings=batch_sharding(self.mesh, self.rules, len(rows)))
        return self._cuts[len(rows)](batch, rows, start)

    @property
    def forward_micro(self) -> int:
        fb = self.ppo.forward_batch_size or self.batch_size
        return max(1, self.batch_size // fb)

    def _advantages_fn(self, kl, values, mask, end, code_r, expl_r, beta):
        ppo = self.ppo
        rewards = place_rewards(beta * kl, mask, end, code_r, expl_r)
        if ppo.whiten_rewards:
            rewards = A.whiten(rewards, mask, shift_mean=False)
        adv, returns = A.gae(rewards, values, mask, ppo.gamma, ppo.lam)
        if ppo.whiten_advantages:
            adv = A.whiten(adv, mask)
        return adv, returns, L.explained_variance(values, returns, mask)

    def _loss(self, response_len: int):
        """(loss_fn, skip_update) of one PPO minibatch (`training.train_step` conventions)."""
        ppo, graphdef = self.ppo, self.graphdef

        def loss_fn(params, mb):
            policy = nnx.merge(graphdef, params)
            hidden, tokens = response_hidden(policy.lm, *[mb[k] for k in ROLLOUT_KEYS], response_len)
            logprobs = response_log_probs(policy.lm, hidden, tokens)
            values = policy.value_head(hidden)
            mask = mb["response_mask"]
            pg, count, pg_clipped = L.policy_loss(logprobs, mb["old_logprobs"], mb["advantages"], mask, ppo.cliprange)
            vf, _, vf_clipped = L.value_loss(values, mb["old_values"], mb["returns"], mask, ppo.cliprange_value)
            ratio, _ = L.ratio_sum(logprobs, mb["old_logprobs"], mask)
            diff = jnp.where(mask > 0, logprobs - mb["old_logprobs"], 0.0)
            return pg + ppo.vf_coef * vf, {"count": count, "pg_sum": pg, "vf_sum": vf, "pg_clipped": pg_clipped,
                                           "vf_clipped": vf_clipped, "ratio_sum": ratio,
                                           "approx_kl_sum": 0.5 * jnp.sum(diff * diff)}

        skip = lambda t: t["ratio_sum"] / jnp.maximum(t["count"], 1.0) > ppo.ratio_threshold
        return loss_fn, skip

    def _train_fn(self, response_len: int):
        loss_fn, skip = self._loss(response_len)
        step = make_train_step(loss_fn, self._optimizer, self.grad_accum_steps, skip_update=skip)
        return jax.jit(step, in_shardings=(self.shardings, self.sharding), out_shardings=(self.shardings, None),
                       donate_argnums=0)

    def _grouped_update(self, m: int, batch, rows: np.ndarray, prompt_lens: np.ndarray, width: int):
        """One optimizer update over minibatch `rows` of `batch`, its micro-batches grouped by
        prompt length and cut to their width (`_grouped_stats`); the same update as `_train_fn`."""
        if ("train", m) not in self._grouped:
            loss_fn, skip = self._loss(m)
            acc = Accumulation(loss_fn, self._optimizer, skip_update=skip)
            grads = (self.shardings.params, None)
            self._grouped["train", m] = (jax.jit(acc.start, out_shardings=grads),
                                         jax.jit(acc.add, out_shardings=grads, donate_argnums=(2, 3)),
                                         jax.jit(acc.apply, out_shardings=(self.shardings, None), donate_argnums=0))
        start, add, apply = self._grouped["train", m]
        carry = None
        for part, keep in length_groups(rows, prompt_lens, self.grad_accum_steps, width, self.trim_widths(width)):
            mb = self._cut(batch, part, width - keep)
            carry = start(self.state.params, mb) if carry is None else add(self.state.params, mb, *carry)
        self.state, totals = apply(self.state, *carry)
        return totals

    # --- one PPO step ------------------------------------------------------------------------
    def generate(self, prompts, seed: int, **sample_args) -> SampleOutput:
        """Samples on this host's devices (on several hosts: pass this host's rows of the global
        batch, `self.rows`, with `row_ids=self.rows` so each row draws from its global stream)."""
        with use_mesh(self.sample_mesh, self.rules):
            return self.sampler.generate(prompts, seed=seed, **sample_args)

    def step(self, out: SampleOutput, score_fn: Callable[[SampleOutput], concurrent.futures.Future],
             seed: int) -> dict[str, float]:
        """PPO on one rollout (`out`, from `generate` or collected; on several hosts, this host's
        rows); returns the step's metrics. `score_fn(out)` must return a Future of a `RewardBatch`
        (it runs while the device works)."""
        width = hosts.global_max(out.prompt_ids.shape[1])  # hosts may have sampled in other buckets
        if width > out.prompt_ids.shape[1]:
            out = widen_prompts(out, width, self.sampler.pad_id)
        rb = out.rescoring_batch()
        m = out.tokens.shape[1]
        mask = (np.arange(m)[None, :] < out.lengths[:, None]).astype(np.int32)
        batch = {"input_ids": rb.input_ids, "attention_mask": rb.attention_mask, "positions": rb.positions}
        order = hosts.gather_rows({"row": self.rows, "length": out.prompt_mask.sum(1)})
        prompt_lens = np.zeros(self.batch_size, np.int64)
        prompt_lens[order["row"]] = order["length"]
        trim = len(self.trim_widths(width)) > 1
        if m not in self._stats and not trim:
            self._stats[m] = self._stats_fn(m)
        t_stats = time.perf_counter()
        with use_mesh(self.mesh, self.rules):  # dispatched asynchronously: the device works from here on
            gbatch = self._put(batch)
            stats = (self._grouped_stats(m, gbatch, prompt_lens, width) if trim
                     else self._stats[m](self.state.params, self.ref_params, gbatch))
        times = {"score_start": time.perf_counter()}
        future = score_fn(out)
        future.add_done_callback(lambda _: times.setdefault("score_end", time.perf_counter()))
        stats = jax.block_until_ready(stats)
        t_device_end = time.perf_counter()
        rewards: RewardBatch = future.result()
        t_score_end = times.get("score_end", time.perf_counter())
        local = {k: hosts.to_local(stats[k]) for k in ("logprobs", "ref_logprobs", "entropy")}

        code_r = np.asarray(rewards.code_reward, np.float64)
        expl_end = np.asarray(rewards.explanation_end, np.int64).copy()
        expl_r = np.asarray(rewards.explanation_reward, np.float64)
        bad = ~np.isfinite(code_r) | ((expl_end >= 0) & ~np.isfinite(expl_r))
        mask[bad] = 0  # unscorable rows: counted, never trained on
        code_r, expl_r = np.where(bad, 0.0, code_r), np.where(expl_end >= 0, np.nan_to_num(expl_r), 0.0)
        expl_end[bad] = -1

        put = self._put
        adv, returns, explained_variance = self._advantages(
            stats["kl"], stats["values"], put(mask), put(expl_end.astype(np.int32)), put(code_r.astype(np.float32)),
            put(expl_r.astype(np.float32)), np.float32(self.beta))
        train_batch = {**gbatch, "response_mask": put(mask), "old_logprobs": stats["logprobs"],
                       "old_values": stats["values"], "advantages": adv, "returns": returns}
        has_expl = (expl_end >= 0) & ~bad
        rows = hosts.gather_rows({
            "code_r": code_r, "expl_r": expl_r, "bad": bad, "has_expl": has_expl, "tokens": mask.sum(1),
            "length": out.lengths, "entropy": np.sum(np.where(mask > 0, local["entropy"], 0.0), axis=1),
            # the controller and the `kl` metric use log π − log π_ref whatever the penalty's estimator (TRL)
            "kl": np.sum(np.where(mask > 0, local["logprobs"] - local["ref_logprobs"], 0.0), axis=1),
            **{f"metric/{k}": np.broadcast_to(np.asarray(v, np.float64), code_r.shape)
               for k, v in rewards.metrics.items()}})
        t_train = time.perf_counter()
        if rows["tokens"].any():
            totals = self._ppo_epochs(train_batch, m, seed, prompt_lens, width)
        else:  # nothing scorable: no update at all (Adam's momentum would still move the weights)
            totals = dict.fromkeys(("policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl", "ratio",
                                    "grad_norm", "updates", "skipped_updates"), 0.0)
        t_end = time.perf_counter()

        live = rows["tokens"] > 0
        mean_kl = float(rows["kl"][live].mean()) if live.any() else 0.0
        beta_used = self.beta
        self.beta = float(kl_update(self.ppo.kl_control, self.beta, mean_kl, self.batch_size, self.ppo.target_kl,
                                    self.ppo.kl_horizon))
        self.refresh_sampler()

        score_s = t_score_end - times["score_start"]
        overlap = max(0.0, min(t_score_end, t_device_end) - max(times["score_start"], t_stats))
        good, has_expl = ~rows["bad"], rows["has_expl"]
        metrics = {
            "reward": _mean((rows["code_r"] + rows["expl_r"])[good]),
            "code_reward": _mean(rows["code_r"][good]),
            "explanation_reward": _mean(rows["expl_r"][has_expl]),
            "explanation_rows": float(has_expl.sum()),
            "skipped_rows": float(rows["bad"].sum()),
            "kl": mean_kl, "beta": beta_used,
            "entropy": float(rows["entropy"].sum() / max(float(rows["tokens"].sum()), 1.0)),
            "response_length": float(rows["length"].mean()),
            "response_tokens": float(rows["length"].sum()),
            "explained_variance": float(explained_variance),
            "generate_s": 0.0, "score_s": score_s, "stats_s": t_device_end - t_stats, "train_s": t_end - t_train,
            "scoring_hidden": overlap / score_s if score_s > 0 else 1.0,
            **{k: float(v) for k, v in totals.items()},
            **{k.removeprefix("metric/"): _mean(v[np.isfinite(v)]) for k, v in rows.items() if k.startswith("metric/")},
        }
        return metrics

    def _put(self, batch):
        """This host's rows -> global arrays over the batch sharding."""
        return jax.tree.map(lambda x: hosts.to_global(x, self.sharding, self.batch_size), batch)

    def _ppo_epochs(self, batch, m: int, seed: int, prompt_lens: np.ndarray, width: int) -> dict[str, float]:
        ppo, n = self.ppo, self.batch_size
        trim = len(self.trim_widths(width)) > 1
        if m not in self._train and not trim:
            self._train[m] = self._train_fn(m)
        sums = {}
        updates = skipped = 0
        with use_mesh(self.mesh, self.rules):
            for epoch in range(ppo.epochs):
                order = np.random.default_rng([seed, epoch]).permutation(n)
                for start in range(0, n, ppo.minibatch_size):
                    rows = np.sort(order[start:start + ppo.minibatch_size])
                    if trim:
                        totals = self._grouped_update(m, batch, rows, prompt_lens, width)
                    else:
                        mb = self._cut(batch, rows, 0) if ppo.minibatch_size < n else batch
                        self.state, totals = self._train[m](self.state, mb)
                    totals = jax.device_get(totals)
                    for k, v in totals.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    ratio = float(totals["ratio_sum"]) / max(float(totals["count"]), 1.0)
                    skipped += ratio > ppo.ratio_threshold
                    updates += 1
        count = max(sums.get("count", 0.0), 1.0)
        return {"policy_loss": sums["pg_sum"] / count, "value_loss": sums["vf_sum"] / count,
                "clipfrac": sums["pg_clipped"] / count, "value_clipfrac": sums["vf_clipped"] / count,
                "approx_kl": sums["approx_kl_sum"] / count, "ratio": sums["ratio_sum"] / count,
                "grad_norm": sums["grad_norm"] / max(updates, 1), "updates": float(updates),
                "skipped_updates": float(skipped)}


def _mean(x) -> float:
    return float(np.mean(x)) if np.size(x) else float("nan")


def widen_prompts(out: SampleOutput, width: int, pad_id: int) -> SampleOutput:
    """The same rollout with its left-padded prompts padded further to `width` columns."""
    extra = width - out.prompt_ids.shape[1]
    return dataclasses.replace(out, prompt_ids=np.pad(out.prompt_ids, ((0, 0), (extra, 0)), constant_values=pad_id),
                               prompt_mask=np.pad(out.prompt_mask, ((0, 0), (extra, 0))))
