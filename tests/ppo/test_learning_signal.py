"""The real PPO learner learns, on two toys, in well under a minute of training each:
(a) rewards that count tokens in the explanation and code parts of a response;
(b) completing `def f(): return` judged by asserts in the sandboxed pool plus CodeBLEU.
Each is also run with learning rate 0, where the reward must not rise."""
import numpy as np
import pytest

from ledex_jax.ppo.learner import RewardBatch
from tests.ppo import toys


def summary(trace):
    rewards = [m["reward"] for m in trace]
    return rewards[0], float(np.mean(rewards[-5:])), max(m["kl"] for m in trace)


@pytest.fixture(scope="module")
def counting_prompts():
    rng = np.random.default_rng(0)
    return [list(rng.integers(3, 16, size=4)) for _ in range(16)]


@pytest.mark.parametrize("lr", [1e-2, 0.0])
def test_counting_toy_learns_both_rewards(lr, counting_prompts):
    learner = toys.tiny_learner(vocab=16, batch=16, lr=lr, init_kl_coef=0.05, epochs=4)
    trace = toys.run(learner, counting_prompts, toys.counting_reward(5, 7, split=4), iterations=25,
                     max_new_tokens=8, eos_ids=[])
    first, last, max_kl = summary(trace)
    print(f"lr={lr}: first {first:.2f}, mean of last 5 {last:.2f}, max KL {max_kl:.2f}")
    if lr:
        assert last >= 3.0 and last >= 2 * first, (first, last)
        assert trace[-1]["explanation_reward"] > trace[0]["explanation_reward"]  # both parts learned
        assert trace[-1]["code_reward"] > trace[0]["code_reward"]
        assert max_kl < 40.0  # the KL penalty keeps the policy near the reference
    else:
        assert last < 3.0 and last - first < 1.0, (first, last)
        assert max_kl < 1e-3  # lr 0: the policy is the reference


TESTS = ("assert f() == 1", "assert f() > 0", "assert isinstance(f(), int)")
PIECES = (" 1", " 2", " 0", " None", " -1", " x", " 'a'", "+", " 1.5", " True", " ()", " [1]", " 3")


@pytest.fixture(scope="module")
def pool():
    from executors import ExecutionPool
    with ExecutionPool(workers=2, per_test_timeout=5.0) as p:
        yield p


def return_one_reward(pool, tokenizer):
    """Toy (b): the completion finishes `def f(): return`; R(r) = 5 (S_cb + S_ut) - 5 through
    the real scorer (sandboxed asserts, CodeBLEU against `def f(): return 1`)."""
    import concurrent.futures

    from executors import TestCase
    from ledex_jax.data.benchmarks.problem import Problem
    from ledex_jax.ppo.embedder import HashingEmbedder
    from ledex_jax.ppo.scoring import RewardScorer, ScoringTarget

    problem = Problem(task_id="toy/return_one", benchmark="toy", prompt="Return one.",
                      tests=tuple(TestCase.assertion(t, "f") for t in TESTS), entry_point="f")
    target = ScoringTarget(problem, "def f(): return 0", ("def f(): return 1",))
    scorer = RewardScorer(pool, HashingEmbedder())
    executor = concurrent.futures.ThreadPoolExecutor(1)

    def score(out):
        def compute():
            texts = [f"```python\ndef f(): return{t}\n```" for t in out.texts]
            scores = scorer.score([target] * len(texts), texts, [False] * len(texts))
            return RewardBatch(np.array([s.code_reward for s in scores]), np.full(len(texts), np.nan),
                               np.full(len(texts), -1), {"pass_rate": float(np.mean([s.passed for s in scores]))})
        return executor.submit(compute)
    return score


@pytest.mark.parametrize("lr", [3e-3, 0.0])
def test_return_one_toy_learns_through_the_pool_and_codebleu(lr, pool):
    tok = toys.ToyTokenizer(PIECES)
    learner = toys.tiny_learner(vocab=len(tok), batch=16, lr=lr, tokenizer=tok, init_kl_coef=0.05, epochs=4)
    prompts = [[1]] * 16
    trace = toys.run(learner, prompts, return_one_reward(pool, tok), iterations=25, max_new_tokens=3)
    first, last, max_kl = summary(trace)
    print(f"lr={lr}: first {first:.2f}, mean of last 5 {last:.2f}, max KL {max_kl:.2f}, "
          f"pass rate {trace[0]['pass_rate']:.2f} -> {trace[-1]['pass_rate']:.2f}")
    if lr:
        assert last >= 3.0 and last >= 2 * first, (first, last)
        assert trace[-1]["pass_rate"] > trace[0]["pass_rate"]
        assert max_kl < 40.0
    else:
        assert last < 3.0 and last - first < 1.5, (first, last)
