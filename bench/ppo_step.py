"""One PPO step with LeDex's rewards on SmolLM2-135M-Instruct: ours vs TRL's PPOTrainer.

    python bench/ppo_step.py [--batch 16] [--max_new_tokens 128] [--epochs 4] [--timed 1] [--remat none]

Same model (the embedded SmolLM2 GGUF; TRL gets it as a HF directory written by our exporter),
same 16 prompts (the bundled demo problems' wrong code in both LeDex formats, chat template),
same sampling (temperature 1, 128 new tokens, stop at EOS), same real rewards (sandboxed tests,
CodeBLEU, MiniLM similarity: R(r) + R(e) per response for TRL, placed per token for us), same
PPO settings (4 epochs over the batch, clip 0.2, value clip 0.2, vf_coef 0.1, KL coefficient 0.2
fixed (TRL 0.29 has no adaptive controller), γ 0.99, λ 1, lr 2e-6, float32, no remat).
The anchor is TRL 0.29.1's `trl.experimental.ppo.PPOTrainer` (its last release with PPO,
`bench/trl_ppo_anchor.py`); note TRL uses a separate value model (a second backbone) where we
put a value head on the policy, as TRL v0.8.6 (the paper's) did.

Each side runs in its own subprocess after one untimed warm-up step (compilation, lazy loads).
Prints whole-step seconds side by side, our time split and the share of scoring time hidden
behind the device work, and ends with `RESULT ppo_step ours=<s> anchor=<s> ratio=<anchor/ours>`
(seconds per step: ratio > 1 means we are faster).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))


def bench_config(args):
    from configs.rl import get_config
    cfg = get_config("smollm2")
    cfg.train.batch_size = cfg.ppo.minibatch_size = args.batch
    cfg.ppo.epochs = args.epochs
    cfg.ppo.kl_control = "fixed"
    cfg.rollout.max_new_tokens = args.max_new_tokens
    cfg.train.learning_rate = 2e-6
    cfg.train.max_grad_norm = 1.0
    cfg.model.overrides = {"remat_policy": args.remat}
    cfg.train.grad_accum_steps = max(1, args.batch // 4)  # micro-batches of 4 rows (TRL: 8, with a 2nd model)
    return cfg


def bench_rows(cfg, tokenizer):
    """The first `batch` rows of the demo RL data, formats alternating: (rows, formats, token ids, texts)."""
    from ledex_jax.data import prompts as P
    from ledex_jax.ppo import data as rl_data
    from ledex_jax.ppo.trainer import RLPrompts
    from ledex_jax.ppo import rollout
    report = rl_data.DataReport()
    rows = rl_data.load_rows(cfg.data, report)
    prompts = RLPrompts(rows, rollout.parse_formats(cfg.rollout.formats), cfg.data.style, tokenizer,
                        cfg.rollout.max_prompt_len, 8192, cfg.rollout.max_new_tokens, report)
    rows_b, formats, ids, _ = prompts.batch(0, cfg.train.batch_size, cfg.seed)
    texts = [P.build_prompt(r.prompt_fields(), f, cfg.data.style, tokenizer) for r, f in zip(rows_b, formats)]
    return rows_b, formats, ids, texts


def run_ours(args) -> dict:
    import jax
    from ledex_jax.ppo.learner import PPOLearner
    from ledex_jax.ppo.policy import with_value_head
    from ledex_jax.ppo.trainer import make_reward
    from ledex_jax.sharding import make_mesh
    from ledex_jax.training.model_setup import load_model, load_tokenizer_for
    from ledex_jax.training.optimizer import make_optimizer

    cfg = bench_config(args)
    tokenizer = load_tokenizer_for(cfg)
    mesh = make_mesh(tuple(cfg.mesh.shape))
    lm, model_cfg = load_model(cfg, mesh, tokenizer)
    rows, formats, ids, _ = bench_rows(cfg, tokenizer)
    r = cfg.rollout
    learner = PPOLearner(with_value_head(lm, cfg.seed), make_optimizer(cfg.train, 100), mesh, tuple(cfg.mesh.rules),
                         cfg.ppo, cfg.train.batch_size, tokenizer,
                         dict(max_prompt_len=r.max_prompt_len, prompt_buckets=[r.max_prompt_len]),
                         cfg.train.grad_accum_steps)
    reward, pool = make_reward(cfg, tokenizer)
    steps = []
    try:
        for step in range(args.warmup + args.timed):
            t0 = time.perf_counter()
            out = learner.generate(ids, seed=step, max_new_tokens=r.max_new_tokens, temperature=r.temperature)
            generate_s = time.perf_counter() - t0
            m = learner.step(out, lambda o: reward.submit(o, rows, formats), seed=step)
            m.update(generate_s=generate_s, step_s=time.perf_counter() - t0,
                     new_tokens=float(out.lengths.sum()))
            steps.append(m)
            print(f"ours step {step}: {m['step_s']:.1f}s", file=sys.stderr, flush=True)
    finally:
        reward.close()
        pool.close()
    timed = steps[args.warmup:]
    mean = lambda k: sum(s[k] for s in timed) / len(timed)
    keys = ("step_s", "generate_s", "stats_s", "score_s", "train_s", "scoring_hidden", "new_tokens", "reward")
    return {"seconds_per_step": mean("step_s"), **{k: mean(k) for k in keys}, "devices": jax.device_count()}


def run_trl(args) -> dict:
    from trl_ppo_anchor import ensure_hf_model, trl_step_seconds
    from ledex_jax.ppo.trainer import make_reward
    from ledex_jax.training.model_setup import load_tokenizer_for

    cfg = bench_config(args)
    tokenizer = load_tokenizer_for(cfg)
    rows, formats, _, texts = bench_rows(cfg, tokenizer)
    by_prompt = {t: (row, f) for t, row, f in zip(texts, rows, formats)}
    reward, pool = make_reward(cfg, tokenizer)

    def reward_fn(prompts, completions):
        targets, explains = zip(*[(by_prompt[p][0].target, by_prompt[p][1] == "explain_refine") for p in prompts])
        scores = reward.scorer.score(list(targets), list(completions), list(explains))
        return [float(s.code_reward) + float(s.explanation_reward or 0.0) for s in scores]

    try:
        res = trl_step_seconds(ensure_hf_model(args.model_dir), texts, reward_fn, max_new_tokens=args.max_new_tokens,
                               epochs=args.epochs, warmup_steps=args.warmup, timed_steps=args.timed,
                               micro_batch=min(8, args.batch))
    finally:
        reward.close()
        pool.close()
    return {k: v for k, v in res.items() if isinstance(v, (int, float, str))}


def side(name, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), f"--side={name}", f"--batch={args.batch}",
           f"--max_new_tokens={args.max_new_tokens}", f"--epochs={args.epochs}", f"--warmup={args.warmup}",
           f"--timed={args.timed}", f"--remat={args.remat}", f"--model_dir={args.model_dir}"]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} side failed:\n{proc.stderr[-4000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("JSON ")][-1]
    return json.loads(line[5:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timed", type=int, default=1)
    ap.add_argument("--remat", default="none", help="our remat policy (TRL: no gradient checkpointing)")
    ap.add_argument("--model_dir", default="/tmp/smollm2_hf", help="where TRL's HF copy of SmolLM2 is written")
    ap.add_argument("--side", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        result = run_ours(args) if args.side == "ours" else run_trl(args)
        print("JSON " + json.dumps(result))
        return
    ours = side("ours", args)
    trl = side("trl", args)
    print(f"PPO step, SmolLM2-135M, batch {args.batch}, {args.max_new_tokens} new tokens, {args.epochs} epochs, "
          f"real rewards; seconds per step (after {args.warmup} warm-up step)")
    print(f"  ours: {ours['seconds_per_step']:8.1f}  (generate {ours['generate_s']:.1f}, rescore {ours['stats_s']:.1f}, "
          f"score {ours['score_s']:.1f} with {100 * ours['scoring_hidden']:.0f}% hidden, train {ours['train_s']:.1f}; "
          f"{ours['new_tokens']:.0f} new tokens)")
    extra = ", ".join(f"{k} {v:.1f}" for k, v in trl.items() if k.endswith("_s") and isinstance(v, float))
    print(f"  TRL {trl.get('trl_version', '?')} {trl.get('trainer', '')}: {trl['seconds_per_step']:8.1f}  ({extra})")
    print(f"RESULT ppo_step ours={ours['seconds_per_step']:.2f} anchor={trl['seconds_per_step']:.2f} "
          f"ratio={trl['seconds_per_step'] / ours['seconds_per_step']:.2f}")


if __name__ == "__main__":
    main()
