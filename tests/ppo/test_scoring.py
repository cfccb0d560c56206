"""RewardScorer: LeDex's S_cb/S_ut/S_ex and rewards on real sandboxed test runs, CodeBLEU and the
bundled MiniLM embedder; the sentence-embedder loaders."""
import importlib.util
import math
import time

import codebleu
import numpy as np
import pytest

from executors import ExecutionPool
from ledex_jax.collect.problems import load_demo
from ledex_jax.ppo import embedder as embedder_mod
from ledex_jax.ppo.embedder import EmbedderError, HashingEmbedder, load_embedder
from ledex_jax.ppo.scoring import RewardScorer, Score, ScoringTarget, is_echo

WRONG = "def sum_of_squares(n):\n    return sum(i * i for i in range(n))\n"
PARTLY = "def sum_of_squares(n):\n    return n * n\n"  # right for n=1 only: 1 of 3 tests
FIX = "def sum_of_squares(n):\n    return sum(i * i for i in range(1, n + 1))\n"
REWRITE = ("def sum_of_squares(n):\n    total = 0\n    for k in range(1, n + 1):\n"
           "        total += k ** 2\n    return total\n")
FIX_EXPLANATION = ("The range starts at 0 and stops before n, so the n-th square is never added. "
                   "The loop must run from 1 to n inclusive: range(1, n + 1).")
CLOSE_EXPLANATION = ("The bug is the range: range(n) goes from 0 to n - 1 and misses the square of n "
                     "itself. It should iterate over range(1, n + 1) to include n.")
UNRELATED_EXPLANATION = "The weather in the mountains was sunny, and we had a picnic by the lake."


def answer(code, explanation=""):
    return f"{explanation}\n```python\n{code}```\n" if explanation else f"```python\n{code}```\n"


@pytest.fixture(scope="module")
def pool():
    with ExecutionPool(workers=2, per_test_timeout=5, allow_unsandboxed=True) as p:
        yield p


@pytest.fixture(scope="module")
def problems():
    return {p.source: p.problem for p in load_demo()}


@pytest.fixture(scope="module")
def target(problems):
    return ScoringTarget(problem=problems["demo/000_sum_of_squares"], wrong_code=WRONG,
                         reference_codes=(FIX,), reference_explanations=(FIX_EXPLANATION,))


@pytest.fixture(scope="module")
def minilm():
    t0 = time.perf_counter()
    emb = load_embedder("offline:minilm")
    print(f"\nMiniLM load (import + weights): {time.perf_counter() - t0:.1f} s")
    return emb


@pytest.fixture(scope="module")
def scorer(pool):
    with RewardScorer(pool, HashingEmbedder()) as s:
        yield s


def test_correct_fix_passes(scorer, target):
    (s,) = scorer.score([target], [answer(REWRITE)], [False])
    assert isinstance(s, Score)
    assert s.code == REWRITE.rstrip("\n") and s.passed and s.test_pass_rate == 1.0
    assert 0 < s.codebleu < 1 and not s.echo
    assert s.code_reward == pytest.approx(5 * (s.codebleu + 1.0) - 5) and s.code_reward > 0
    (same,) = scorer.score([target], [answer(FIX)], [False])
    assert same.codebleu == pytest.approx(1.0) and same.code_reward == pytest.approx(5.0)


def test_wrong_code_fails_some_tests(scorer, target):
    partly, wrong = scorer.score([target, target], [answer(PARTLY), answer(WRONG)], [False, False])
    assert partly.test_pass_rate == pytest.approx(1 / 3) and not partly.passed
    assert wrong.test_pass_rate == 0.0 and not wrong.passed
    assert partly.code_reward == pytest.approx(5 * (partly.codebleu + 1 / 3) - 5)


def test_no_code_block_is_minus_five(scorer, target):
    # the trap: codebleu scores missing code 0.25, which would be worth -3.75
    assert codebleu.calc_codebleu(references=[FIX], predictions=[""], lang="python")["codebleu"] == 0.25
    texts = ["I think the loop is wrong but I will not write code.",
             "```python\ndef sum_of_squares(n):\n    return 0\n",  # unterminated block
             "Fixed:\n```python\n\n```"]                           # empty block
    for s in scorer.score([target] * 3, texts, [True] * 3):
        assert s.code is None and s.codebleu is None and s.test_pass_rate is None
        assert s.code_reward == -5.0 and s.explanation_reward is None and s.similarity is None
        assert not s.passed and not s.echo
    assert scorer.score([target], [texts[0]], [True])[0].explanation == texts[0]


def test_echo_detected_and_penalised(pool, scorer, target):
    reformatted = "def sum_of_squares( n ):\n    # add up the squares\n    return sum(i*i for i in range(n))\n"
    assert is_echo(reformatted, WRONG) and not is_echo(FIX, WRONG)
    assert is_echo("def f(:\n  x", "def f(:\n    x\n\n")  # unparsable: stripped lines compared
    texts = [answer(WRONG), answer(reformatted), answer(FIX)]
    plain = scorer.score([target] * 3, texts, [False] * 3)
    assert [s.echo for s in plain] == [True, True, False]
    assert plain[0].codebleu > 0.5  # why echoes need watching: high CodeBLEU for no fix
    with RewardScorer(pool, HashingEmbedder(), echo_penalty=2.0) as penalised:
        pen = penalised.score([target] * 3, texts, [False] * 3)
    for a, b in zip(plain[:2], pen[:2]):
        assert b.code_reward == pytest.approx(max(a.code_reward - 2.0, -5.0))
    assert pen[2].code_reward == plain[2].code_reward
    with RewardScorer(pool, HashingEmbedder(), echo_penalty=100.0) as harsh:
        assert harsh.score([target], [texts[0]], [False])[0].code_reward == -5.0


def test_explanation_reward_minilm(pool, target, minilm):
    no_refs = ScoringTarget(problem=target.problem, wrong_code=WRONG, reference_codes=(FIX,))
    with RewardScorer(pool, minilm) as scorer:
        t0 = time.perf_counter()
        close, unrelated, empty, refine, unreferenced = scorer.score(
            [target, target, target, target, no_refs],
            [answer(FIX, CLOSE_EXPLANATION), answer(FIX, UNRELATED_EXPLANATION), answer(FIX),
             answer(FIX, CLOSE_EXPLANATION), answer(FIX, CLOSE_EXPLANATION)],
            [True, True, True, False, True])
        print(f"\nscore(5 responses, MiniLM): {(time.perf_counter() - t0) * 1e3:.0f} ms, "
              f"stages {scorer.last_timings}")
    assert close.similarity > unrelated.similarity
    assert close.explanation_reward > unrelated.explanation_reward
    assert -5.0 <= unrelated.explanation_reward < close.explanation_reward <= 5.0
    assert close.explanation == CLOSE_EXPLANATION
    assert empty.explanation == "" and empty.explanation_reward == -5.0 and empty.similarity is None
    assert refine.explanation_reward is None and refine.similarity is None
    assert unreferenced.explanation_reward is None
    for s in (close, unrelated, empty, refine, unreferenced):  # the code reward is unaffected
        assert s.code_reward == pytest.approx(5.0)
    # S_ex is the mean cosine to each reference explanation
    two = ScoringTarget(problem=target.problem, wrong_code=WRONG, reference_codes=(FIX,),
                        reference_explanations=(FIX_EXPLANATION, UNRELATED_EXPLANATION))
    with RewardScorer(pool, minilm, clip_explanation_reward=False) as scorer:
        (s,) = scorer.score([two], [answer(FIX, CLOSE_EXPLANATION)], [True])
    e = minilm.encode([CLOSE_EXPLANATION, FIX_EXPLANATION, UNRELATED_EXPLANATION])
    assert s.similarity == pytest.approx(float(np.mean(e[1:] @ e[0])), abs=1e-5)
    assert s.explanation_reward == pytest.approx((50 * s.similarity - 35) / 3, abs=1e-4)


def test_minilm_encode(minilm):
    texts = [f"explanation number {i}: the loop bound is off by one" for i in range(16)]
    minilm.encode(texts)
    t0 = time.perf_counter()
    out = minilm.encode(texts)
    print(f"\nMiniLM encode 16 texts: {(time.perf_counter() - t0) * 1e3:.0f} ms")
    assert out.shape == (16, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_pairwise_mean_of_codebleu(pool, target):
    refs = (FIX, REWRITE)
    two = ScoringTarget(problem=target.problem, wrong_code=WRONG, reference_codes=refs)
    weights = (0.1, 0.2, 0.3, 0.4)
    with RewardScorer(pool, HashingEmbedder(), codebleu_weights=weights) as scorer:
        (s,) = scorer.score([two], [answer(PARTLY)], [False])
        print(f"\nscore(1 response, 2 references): stages {scorer.last_timings}")
    single = [codebleu.calc_codebleu(references=[r], predictions=[PARTLY], lang="python",
                                     weights=weights)["codebleu"] for r in refs]
    assert s.codebleu == pytest.approx(float(np.mean(single)))
    assert single[0] != pytest.approx(single[1])
    t0 = time.perf_counter()
    for _ in range(20):
        codebleu.calc_codebleu(references=[REWRITE], predictions=[PARTLY], lang="python")
    print(f"CodeBLEU per call: {(time.perf_counter() - t0) / 20 * 1e3:.2f} ms")


def test_score_async_matches_score(scorer, target, problems):
    other = ScoringTarget(problem=problems["demo/003_factorial"],
                          wrong_code="def factorial(n):\n    return n\n",
                          reference_codes=("def factorial(n):\n    r = 1\n    for i in range(2, n + 1):\n"
                                           "        r *= i\n    return r\n",),
                          reference_explanations=("n! multiplies every integer from 1 to n.",))
    targets = [target, other, target, other]
    texts = [answer(FIX, CLOSE_EXPLANATION), answer("import math\ndef factorial(n):\n    return math.factorial(n)\n",
                                                    "Use the product of 1..n."),
             "no code", answer("def factorial(n):\n    return n\n")]
    explains = [True, True, False, False]
    got = scorer.score_async(targets, texts, explains).result(timeout=120)
    assert got == scorer.score(targets, texts, explains)
    assert got[1].passed and got[2].code is None and got[3].echo


def test_codebleu_failure_is_nan_for_that_response_only(pool, target, monkeypatch):
    real = codebleu.calc_codebleu
    bad = "def sum_of_squares(n):\n    return 'boom'\n"

    def flaky(references, predictions, **kw):
        if predictions[0].strip() == bad.strip():
            raise RecursionError("tree-sitter blew up")
        if "nan" in predictions[0]:
            return {"codebleu": float("nan")}
        return real(references=references, predictions=predictions, **kw)

    monkeypatch.setattr(codebleu, "calc_codebleu", flaky)
    with RewardScorer(pool, HashingEmbedder()) as scorer:
        ok, boom, nan = scorer.score([target] * 3, [answer(FIX, "Fix the range."), answer(bad, "Hm."),
                                                     answer("nan = 1\n" + FIX)], [True] * 3)
    assert ok.code_reward == pytest.approx(5.0) and ok.explanation_reward is not None
    for s in (boom, nan):
        assert s.codebleu is None and math.isnan(s.code_reward)
        assert s.test_pass_rate is not None and s.explanation_reward is not None
    assert nan.passed and not boom.passed


def test_hashing_embedder():
    emb = HashingEmbedder(dim=512)
    texts = ["The loop bound is off by one.", "The loop bound is off by one.", "Totally different words here",
             ""]
    out = emb.encode(texts)
    assert out.shape == (4, 512) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:3], axis=1), 1.0, atol=1e-6)
    assert float(out[0] @ out[1]) == pytest.approx(1.0)
    assert float(out[0] @ out[2]) < 0.5
    assert not out[3].any()  # nothing to embed: the zero vector
    np.testing.assert_array_equal(out, HashingEmbedder(dim=512).encode(texts))
    assert float(emb.encode(["the loop  BOUND is off by one"])[0] @ out[0]) > 0.8
    assert emb.encode([]).shape == (0, 512)
    with pytest.raises(TypeError):
        emb.encode("one string")


def test_load_embedder_specs(monkeypatch):
    assert isinstance(load_embedder("hashing"), HashingEmbedder)
    assert load_embedder("hashing:128").dim == 128
    with pytest.raises(ValueError, match="offline"):
        load_embedder("offline:nonesuch")
    # a hub name is attempted with sentence-transformers; failing, the error names the way out
    import sentence_transformers

    def no_hub(name, device=None):
        raise OSError(f"cannot reach the hub for {name}")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", no_hub)
    with pytest.raises(EmbedderError, match="offline:minilm") as err:
        load_embedder(embedder_mod.PAPER_MODEL)
    assert "all-roberta-large-v1" in str(err.value)
    lazy = load_embedder(embedder_mod.PAPER_MODEL, lazy=True)  # nothing loaded yet
    with pytest.raises(EmbedderError):
        lazy.encode(["x"])
    # without sentence-transformers, the error names the install command
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sentence_transformers" else real_find_spec(name, *a))
    with pytest.raises(EmbedderError, match=r"pip install -e '\.\[rewards\]'"):
        load_embedder("offline:minilm")


def test_targets_and_inputs_are_checked(scorer, target):
    with pytest.raises(ValueError, match="demo/000_sum_of_squares"):
        ScoringTarget(problem=target.problem, wrong_code=WRONG, reference_codes=())
    with pytest.raises(TypeError, match="demo/000_sum_of_squares"):
        ScoringTarget(problem=target.problem, wrong_code=WRONG, reference_codes=FIX)
    assert ScoringTarget(problem=target.problem, wrong_code=WRONG, reference_codes=[FIX]).reference_codes == (FIX,)
    with pytest.raises(ValueError, match="match"):
        scorer.score([target], [answer(FIX)], [True, False])
    assert scorer.score([], [], []) == []
