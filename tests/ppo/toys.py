"""Two toy tasks for the real PPO learner (tests/ppo/test_learning_signal.py), small enough to
learn in seconds on a CPU: (a) count tokens, (b) complete `def f(): return` so asserts pass."""
from __future__ import annotations

import concurrent.futures

import jax
import numpy as np
import optax
from ml_collections import ConfigDict

from ledex_jax.models import build_model, get_preset
from ledex_jax.ppo.learner import PPOLearner, RewardBatch
from ledex_jax.ppo.policy import with_value_head
from ledex_jax.sharding import DEFAULT_RULES, make_mesh


def ppo_settings(**changes) -> ConfigDict:
    """configs/rl.py's PPO settings (TRL v0.8.6 defaults, the paper's γ = 0.99, λ = 1) with changes."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("rl_config", Path(__file__).resolve().parents[2] / "configs" / "rl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ppo = module.get_config("tiny").ppo
    ppo.update(changes)
    return ppo


def tiny_learner(vocab: int, batch: int, lr: float, tokenizer=None, seed: int = 0, **ppo_changes) -> PPOLearner:
    cfg = get_preset("tiny_llama").replace(vocab_size=vocab, max_position_embeddings=64, bos_token_id=1,
                                           eos_token_id=2, pad_token_id=0)
    ppo = ppo_settings(minibatch_size=batch, **ppo_changes)
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    return PPOLearner(with_value_head(build_model(cfg, seed), seed), optax.adam(lr), mesh, DEFAULT_RULES, ppo, batch,
                      tokenizer, sampler_args=dict(max_prompt_len=8))


class ToyTokenizer:
    """Ids 0-2 are pad, BOS, EOS; the rest are the given pieces of text."""

    def __init__(self, pieces):
        self.pieces = ["<pad>", "<s>", "</s>", *pieces]
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2

    def __len__(self):
        return len(self.pieces)

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids if not (skip_special_tokens and i < 3))

    def encode(self, text):
        raise NotImplementedError("toy prompts are given as token ids")


def run(learner: PPOLearner, prompts, score_fn, iterations: int, max_new_tokens: int, eos_ids=None):
    """PPO iterations; returns the per-iteration metrics."""
    trace = []
    for it in range(iterations):
        out = learner.generate(prompts, seed=it, max_new_tokens=max_new_tokens, eos_ids=eos_ids)
        trace.append(learner.step(out, score_fn, seed=it))
    return trace


def counting_reward(explanation_token: int, code_token: int, split: int):
    """Toy (a): tokens [0, split) are the explanation, the rest the code. R(e) = how often
    `explanation_token` appears in the explanation, R(r) = how often `code_token` is in the code."""
    executor = concurrent.futures.ThreadPoolExecutor(1)

    def score(out):
        def compute():
            t = out.tokens
            return RewardBatch(code_reward=(t[:, split:] == code_token).sum(1).astype(float),
                               explanation_reward=(t[:, :split] == explanation_token).sum(1).astype(float),
                               explanation_end=np.full(len(t), split - 1))
        return executor.submit(compute)
    return score
