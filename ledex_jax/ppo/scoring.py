"""Score policy responses with LeDex's scores and rewards (LEDEX.md §3), on the CPU.

For each response to an RL row (`ScoringTarget`) the scorer computes

- S_ut: the fraction of the problem's tests the response's code passes (sandboxed, through an
  `executors.ExecutionPool`);
- S_cb: the mean of pairwise CodeBLEU scores of that code against each reference code (one
  ``calc_codebleu`` call per reference, then the mean; not one multi-reference call);
- S_ex: for explain-then-refine responses, the mean cosine between the explanation's embedding
  and each reference explanation's;

and from them the code reward R(r) = 5·(S_cb + S_ut) − 5 and the explanation reward
R(e) = (50·S_ex − 35)/3 (`ledex_jax.ppo.rewards`). Nothing here touches JAX (the reward formulas
are called on Python floats), so `RewardScorer.score_async` can run on a background thread while
the accelerator generates or trains.

Rules beyond the formulas (choices, documented in `Score` too):

- A response without a complete ```python block (or with an empty one) gets R(r) = −5 exactly
  and no R(e): codebleu 0.7.0 scores empty or garbage code 0.25, which would otherwise reward
  writing no code at all.
- An explain-then-refine response whose explanation is empty (its code block comes first) gets
  R(e) = −5, the clipped minimum; otherwise skipping the explanation would dodge a negative
  explanation reward. A row without reference explanations places no R(e) at all.
- Echoes (the response's code equals the wrong code up to formatting) are flagged; codebleu
  scores an echo ≈0.5–0.8 against the fix, so a policy can farm reward by repeating its input.
  ``echo_penalty`` (default 0, not in the paper) is subtracted from an echo's R(r), floored at −5.
- If CodeBLEU raises or returns NaN for one response (tree-sitter on pathological input), that
  response gets ``codebleu=None`` and ``code_reward=nan`` and the batch goes on: the trainer
  counts and skips NaN rewards. A failure of the pool or the embedder is not per-response and
  is raised.
"""
from __future__ import annotations

import ast
import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import logging
import math
import threading
import time
from collections.abc import Sequence

import numpy as np

from ledex_jax.data.benchmarks.problem import Problem
from ledex_jax.data.prompts import split_answer
from ledex_jax.evaluate.functional import program_for, suite_verdicts
from ledex_jax.ppo import rewards

log = logging.getLogger(__name__)
MIN_REWARD = -5.0


@dataclasses.dataclass(frozen=True)
class ScoringTarget:
    """One RL data row: what a response to it is judged against.

    ``reference_codes`` are the verified refinements of ``wrong_code`` (or, for a row without
    any, the dataset's reference solutions) and must not be empty; ``reference_explanations``
    are the explanations that preceded verified refinements and may be empty (then no R(e)).
    """

    problem: Problem
    wrong_code: str
    reference_codes: tuple[str, ...]
    reference_explanations: tuple[str, ...] = ()

    def __post_init__(self):
        row = getattr(self.problem, "task_id", "?")
        for name in ("reference_codes", "reference_explanations"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"ScoringTarget for {row}: {name} must be a sequence of strings, "
                                "not one string")
            object.__setattr__(self, name, tuple(value))
        if not self.reference_codes:
            raise ValueError(f"ScoringTarget for {row}: reference_codes is empty; a row without "
                             "any verified refinement or reference solution cannot be scored "
                             "(skip and count it)")
        if any(not isinstance(c, str) or not c.strip() for c in self.reference_codes):
            raise ValueError(f"ScoringTarget for {row}: a reference code is blank or not a string")
        if any(not isinstance(e, str) for e in self.reference_explanations):
            raise ValueError(f"ScoringTarget for {row}: reference_explanations must be strings")


@dataclasses.dataclass(frozen=True)
class Score:
    """LeDex's scores and rewards for one response.

    code: the response's last complete ```python block (None: no parsable code).
    explanation: the text before that block (the whole response when there is no block).
    codebleu: S_cb, mean pairwise CodeBLEU to the reference codes (None: no code, or CodeBLEU
      failed for this response, in which case code_reward is NaN).
    test_pass_rate: S_ut, fraction of the problem's tests passed (None: no code).
    similarity: S_ex, mean cosine to the reference explanations (None: not scored).
    code_reward: R(r); exactly −5 when code is None; NaN when CodeBLEU failed (skip the sample).
    explanation_reward: R(e); None = place no explanation reward (refine format, no code, or no
      reference explanations); −5 for an explain-then-refine response with an empty explanation.
    echo: the code equals the row's wrong code after normalisation.
    passed: every test suite of the problem passed.
    """

    code: str | None
    explanation: str
    codebleu: float | None
    test_pass_rate: float | None
    similarity: float | None
    code_reward: float
    explanation_reward: float | None
    echo: bool
    passed: bool


class _LRU:
    """A small thread-safe LRU dict."""

    def __init__(self, size: int):
        self.size = int(size)
        self._data: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key, value):
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self):
        return len(self._data)


@functools.lru_cache(maxsize=4096)
def _normal_form(code: str):
    """AST dump when ``code`` parses (formatting and comments do not count), else None."""
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _lines(code: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in code.splitlines() if line.strip())


def is_echo(code: str, wrong_code: str) -> bool:
    """Whether ``code`` is ``wrong_code`` up to formatting: equal ASTs when both parse, else equal
    stripped non-empty lines."""
    a, b = _normal_form(code), _normal_form(wrong_code)
    if a is not None and b is not None:
        return a == b
    return _lines(code) == _lines(wrong_code)


def _import_codebleu():
    try:
        import codebleu
    except ImportError as e:
        raise ImportError(f"the code reward needs the codebleu package ({e}); install the rewards "
                          "extra: pip install -e '.[rewards]'") from e
    return codebleu


class RewardScorer:
    """Turns response texts into `Score`s. Thread-safe; owns one background thread for
    `score_async`, not the pool or the embedder.

    Args:
      pool: an `executors.ExecutionPool` (the scorer submits to it, never closes it).
      embedder: an object with ``encode(texts) -> [N, D]`` L2-normalised float32 rows, or a spec
        string for `ledex_jax.ppo.embedder.load_embedder`.
      clip_explanation_reward: clip R(e) to [−5, 5] (our choice; the paper does not say).
      echo_penalty: subtracted from the code reward of echoed wrong code (floor −5); 0 = paper.
      codebleu_weights: CodeBLEU's (ngram, weighted ngram, syntax, dataflow) weights.
      cache_size: entries in each LRU cache (pairwise CodeBLEU scores keyed by (reference,
        code); reference-explanation embeddings keyed by text). 0 disables them.
    """

    def __init__(self, pool, embedder, *, clip_explanation_reward: bool = True,
                 echo_penalty: float = 0.0,
                 codebleu_weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
                 cache_size: int = 8192):
        if isinstance(embedder, str):
            from ledex_jax.ppo.embedder import load_embedder
            embedder = load_embedder(embedder)
        if not callable(getattr(embedder, "encode", None)):
            raise TypeError(f"embedder must have encode(texts), got {type(embedder).__name__}")
        weights = tuple(float(w) for w in codebleu_weights)
        if len(weights) != 4 or any(w < 0 or not math.isfinite(w) for w in weights):
            raise ValueError(f"codebleu_weights must be 4 non-negative numbers, got {codebleu_weights!r}")
        if not (echo_penalty >= 0 and math.isfinite(echo_penalty)):
            raise ValueError(f"echo_penalty must be a finite number >= 0, got {echo_penalty!r}")
        self._codebleu = _import_codebleu()
        self.pool = pool
        self.embedder = embedder
        self.clip_explanation_reward = bool(clip_explanation_reward)
        self.echo_penalty = float(echo_penalty)
        self.codebleu_weights = weights
        self._pair_cache = _LRU(cache_size)
        self._ref_embeddings = _LRU(cache_size)
        self._batches = itertools.count()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ledex-reward-scorer")
        self._closed = False
        self.last_timings: dict[str, float] = {}  # seconds spent per stage in the latest score()

    # -- public API -------------------------------------------------------------------------
    def score(self, targets: Sequence[ScoringTarget], responses: Sequence[str],
              explains: Sequence[bool]) -> list[Score]:
        """One `Score` per response. ``explains[i]``: response i was asked for the
        explain-then-refine format (so it is due an explanation reward)."""
        targets, responses, explains = list(targets), list(responses), list(explains)
        if not len(targets) == len(responses) == len(explains):
            raise ValueError(f"score: {len(targets)} targets, {len(responses)} responses and "
                             f"{len(explains)} explains flags; they must match one to one")
        for i, (t, r) in enumerate(zip(targets, responses)):
            if not isinstance(t, ScoringTarget):
                raise TypeError(f"score: targets[{i}] is a {type(t).__name__}, not a ScoringTarget")
            if not isinstance(r, str):
                raise TypeError(f"score: responses[{i}] is a {type(r).__name__}, not a str")
        t0 = time.perf_counter()
        parts = [split_answer(r) for r in responses]
        explanations = [e for e, _ in parts]
        codes = [c if c is not None and c.strip() else None for _, c in parts]

        # 1. Tests first: the pool's workers run while this thread does CodeBLEU and embeddings.
        batch = next(self._batches)
        futures = {i: self.pool.submit(program_for(t.problem, code, f"{t.problem.task_id}#rl{batch}.{i}"))
                   for i, (t, code) in enumerate(zip(targets, codes)) if code is not None}
        t1 = time.perf_counter()

        # 2. S_cb and echoes.
        codebleus = [None if code is None else self._mean_codebleu(code, t.reference_codes, i)
                     for i, (t, code) in enumerate(zip(targets, codes))]
        echoes = [code is not None and is_echo(code, t.wrong_code) for t, code in zip(targets, codes)]
        t2 = time.perf_counter()

        # 3. S_ex, one encode call for every explanation and every uncached reference.
        due = [i for i in range(len(targets))
               if explains[i] and codes[i] is not None and targets[i].reference_explanations]
        to_embed = [i for i in due if explanations[i].strip()]
        similarities = self._similarities([targets[i] for i in to_embed],
                                          [explanations[i] for i in to_embed])
        similarity = dict(zip(to_embed, similarities))
        t3 = time.perf_counter()

        # 4. Collect the verdicts.
        results = {i: f.result() for i, f in futures.items()}
        t4 = time.perf_counter()

        scores = []
        for i, (t, code) in enumerate(zip(targets, codes)):
            if code is None:
                scores.append(Score(code=None, explanation=explanations[i], codebleu=None,
                                    test_pass_rate=None, similarity=None, code_reward=MIN_REWARD,
                                    explanation_reward=None, echo=False, passed=False))
                continue
            result = results[i]
            ut = float(result.fraction_passed)
            passed = bool(result.tests) and all(suite_verdicts(t.problem, result.tests).values())
            cb = codebleus[i]
            if cb is None:
                r_code = float("nan")
            else:
                r_code = float(rewards.code_reward(cb, ut))
                if echoes[i]:
                    r_code = max(r_code - self.echo_penalty, MIN_REWARD)
            sim, r_expl = None, None
            if i in similarity:
                sim = similarity[i]
                r_expl = float(rewards.explanation_reward(sim, clip=self.clip_explanation_reward))
            elif i in due:  # explain-then-refine, but the code block came first
                r_expl = MIN_REWARD
            scores.append(Score(code=code, explanation=explanations[i], codebleu=cb,
                                test_pass_rate=ut, similarity=sim, code_reward=r_code,
                                explanation_reward=r_expl, echo=echoes[i], passed=passed))
        self.last_timings = {"submit": t1 - t0, "codebleu": t2 - t1, "embed": t3 - t2,
                             "tests_wait": t4 - t3, "total": time.perf_counter() - t0}
        return scores

    def score_async(self, targets: Sequence[ScoringTarget], responses: Sequence[str],
                    explains: Sequence[bool]) -> concurrent.futures.Future:
        """`score` on the scorer's background thread; Future[list[Score]]. Calls run in order."""
        if self._closed:
            raise RuntimeError("the RewardScorer is closed")
        return self._executor.submit(self.score, list(targets), list(responses), list(explains))

    def close(self):
        """Finish queued `score_async` calls and stop the background thread (the pool and the
        embedder stay open: they belong to the caller)."""
        if not self._closed:
            self._closed = True
            self._executor.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals --------------------------------------------------------------------------
    def pair_codebleu(self, code: str, reference: str) -> float:
        """CodeBLEU of ``code`` against one ``reference`` (cached; may raise)."""
        key = (reference, code)
        hit = self._pair_cache.get(key)
        if hit is not None:
            return hit
        value = float(self._codebleu.calc_codebleu(references=[reference], predictions=[code],
                                                    lang="python",
                                                    weights=self.codebleu_weights)["codebleu"])
        if math.isfinite(value):
            self._pair_cache.put(key, value)
        return value

    def _mean_codebleu(self, code: str, references: Sequence[str], index: int) -> float | None:
        try:
            value = float(np.mean([self.pair_codebleu(code, ref) for ref in references]))
        except Exception as e:  # one bad response must not sink the batch
            log.warning("CodeBLEU failed for response %d (%s: %s); its code reward is NaN",
                        index, type(e).__name__, e)
            return None
        if not math.isfinite(value):
            log.warning("CodeBLEU returned %r for response %d; its code reward is NaN", value, index)
            return None
        return value

    def _similarities(self, targets: Sequence[ScoringTarget], explanations: Sequence[str]) -> list[float]:
        if not explanations:
            return []
        refs = {}
        for t in targets:
            for text in t.reference_explanations:
                if text not in refs:
                    refs[text] = self._ref_embeddings.get(text)
        missing = [text for text, vec in refs.items() if vec is None]
        vectors = np.asarray(self.embedder.encode(list(explanations) + missing), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(explanations) + len(missing):
            raise RuntimeError(f"embedder returned shape {vectors.shape} for "
                               f"{len(explanations) + len(missing)} texts")
        for text, vec in zip(missing, vectors[len(explanations):]):
            refs[text] = vec
            self._ref_embeddings.put(text, vec)
        out = []
        for t, vec in zip(targets, vectors[:len(explanations)]):
            ref = np.stack([refs[text] for text in t.reference_explanations])
            cos = float(np.mean(ref @ vec))
            out.append(min(max(cos, -1.0), 1.0))
        return out
