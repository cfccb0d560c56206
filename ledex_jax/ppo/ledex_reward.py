"""LeDex's rewards for a rollout: the scorer's per-response scores (`scoring.RewardScorer`) as the
learner's `RewardBatch`, with each explanation's last token located in the sampled tokens."""
from __future__ import annotations

import concurrent.futures

import numpy as np

from ledex_jax.ppo.learner import RewardBatch
from ledex_jax.ppo.rollout import explanation_end
from ledex_jax.ppo.scoring import RewardScorer, Score


class LedexReward:
    """`submit(out, rows, formats)` -> Future[RewardBatch], computed on one background thread."""

    def __init__(self, scorer: RewardScorer, decode):
        self.scorer, self.decode = scorer, decode
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledex-reward")

    def submit(self, out, rows, formats) -> concurrent.futures.Future:
        return self._executor.submit(self.compute, out, rows, formats)

    def compute(self, out, rows, formats) -> RewardBatch:
        explains = [f == "explain_refine" for f in formats]
        scores = self.scorer.score([r.target for r in rows], out.texts, explains)
        ends = np.full(len(scores), -1, np.int64)
        for i, s in enumerate(scores):
            if s.explanation_reward is not None:
                # an empty explanation (code first) is penalised at the first token
                ends[i] = max(0, explanation_end(out.tokens[i], out.lengths[i], out.texts[i], self.decode))
        code = np.array([s.code_reward for s in scores], np.float64)
        expl = np.array([np.nan if s.explanation_reward is None else s.explanation_reward for s in scores])
        return RewardBatch(code, expl, ends, summarize(scores, explains))

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def summarize(scores: list[Score], explains) -> dict[str, float]:
    """Rollout statistics to log: test pass rate, CodeBLEU, similarity, echo and no-code rates."""
    def mean(values):
        values = [v for v in values if v is not None and np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")
    with_code = [s for s in scores if s.code is not None]
    return {
        "pass_rate": mean([float(s.passed) for s in scores]),
        "test_pass_rate": mean([s.test_pass_rate if s.code is not None else 0.0 for s in scores]),
        "codebleu": mean([s.codebleu for s in with_code]),
        "similarity": mean([s.similarity for s, e in zip(scores, explains) if e]),
        "echo_rate": mean([float(s.echo) for s in scores]),
        "no_code_rate": mean([float(s.code is None) for s in scores]),
    }
