"""Per-round numbers of the self-debug evaluation against hand computation."""
import pytest

from ledex_jax.evaluate.round_metrics import chain_numbers, overall, round_numbers, usable_ks

# Two tasks, 3 samples each; round 1 fixes one sample of each, round 2 fixes nothing.
R0 = {"a": [True, False, False], "b": [False, False, False]}
R1 = {"a": [True, True, False], "b": [False, True, False]}
R2 = dict(R1)


def test_round_zero_has_pass_at_k_and_counts_only():
    rec = round_numbers(0, R0, (1, 2))
    # pass@1 = mean(c/n) = (1/3 + 0) / 2; pass@2 = mean(1 - C(n-c, 2)/C(n, 2)) = (1 - 1/3 + 0) / 2
    assert rec == pytest.approx({"round": 0, "pass@1": 1 / 6, "pass@2": 1 / 3, "passed": 1, "wrong": 5})
    assert list(rec) == ["round", "pass@1", "pass@2", "passed", "wrong"]


def test_refinement_rounds_count_refined_fixed_and_success_rate():
    r0, r1, r2 = chain_numbers([R0, R1, R2], (1,))
    assert r1 == pytest.approx({"round": 1, "pass@1": (2 / 3 + 1 / 3) / 2, "passed": 3, "wrong": 3,
                                "refined": 5, "fixed": 2, "success_rate": 2 / 5})
    assert r2["refined"] == 3 and r2["fixed"] == 0 and r2["success_rate"] == 0.0
    assert r0 == round_numbers(0, R0, (1,))


def test_nothing_to_refine_gives_no_success_rate():
    everything = {"a": [True, True]}
    rec = round_numbers(1, everything, (1,), before=everything)
    assert rec["refined"] == 0 and rec["success_rate"] is None


def test_a_passing_sample_may_not_fail_later():
    with pytest.raises(ValueError, match="sample 0 passed before"):
        round_numbers(1, {"a": [False, False, False]}, (1,), before={"a": [True, False, False]})


def test_mismatched_rounds_are_refused():
    with pytest.raises(ValueError, match="tasks differ"):
        round_numbers(1, {"a": [True]}, (1,), before={"b": [True]})
    with pytest.raises(ValueError, match="has 2 samples, 1 the round before"):
        round_numbers(1, {"a": [True, False]}, (1,), before={"a": [True]})


def test_pass_at_k_refuses_fewer_samples_than_k():
    with pytest.raises(ValueError, match="pass@10 needs at least 10 samples"):
        round_numbers(0, R0, (1, 10))
    assert usable_ks((1, 10, 3), 4) == (1, 3)


def test_overall_weights_rates_by_problems_and_sums_counts():
    mbpp = {"problems": 3, "rounds": {"init": [{"round": 0, "pass@1": 0.5, "pass@10": 0.9, "passed": 6, "wrong": 4}],
                                      "refine": [{"round": 0, "pass@1": 0.5, "pass@10": 0.9, "passed": 6, "wrong": 4},
                                                 {"round": 1, "pass@1": 0.6, "pass@10": 0.95, "passed": 7, "wrong": 3,
                                                  "refined": 4, "fixed": 1, "success_rate": 0.25}]}}
    he = {"problems": 1, "rounds": {"init": [{"round": 0, "pass@1": 0.1, "pass@10": 0.5, "passed": 1, "wrong": 9}],
                                    "refine": [{"round": 0, "pass@1": 0.1, "pass@10": 0.5, "passed": 1, "wrong": 9},
                                               {"round": 1, "pass@1": 0.3, "pass@10": 0.7, "passed": 3, "wrong": 7,
                                                "refined": 9, "fixed": 2, "success_rate": 2 / 9}]}}
    out = overall({"mbpp": mbpp, "humaneval": he})
    assert out["problems"] == 4
    assert out["rounds"]["init"] == [pytest.approx(
        {"round": 0, "pass@1": (3 * 0.5 + 0.1) / 4, "pass@10": (3 * 0.9 + 0.5) / 4, "passed": 7, "wrong": 13})]
    assert out["rounds"]["refine"][1] == pytest.approx(
        {"round": 1, "pass@1": (3 * 0.6 + 0.3) / 4, "pass@10": (3 * 0.95 + 0.7) / 4, "passed": 10, "wrong": 10,
         "refined": 13, "fixed": 3, "success_rate": (3 * 0.25 + 2 / 9) / 4})


def test_overall_leaves_out_undefined_success_rates_and_missing_pass_at_k():
    def bench(problems, rate, with_10):
        rec = {"round": 1, "pass@1": 0.5, "passed": 1, "wrong": 1, "refined": 1 if rate is not None else 0,
               "fixed": 0, "success_rate": rate}
        if with_10:
            rec["pass@10"] = 0.7
        return {"problems": problems, "rounds": {"refine": [rec]}}

    out = overall({"a": bench(2, 0.5, True), "b": bench(5, None, False)})["rounds"]["refine"][0]
    assert out["success_rate"] == 0.5 and "pass@10" not in out
    assert overall({"a": bench(2, None, True)})["rounds"]["refine"][0]["success_rate"] is None


def test_overall_refuses_benchmarks_run_differently():
    one = {"problems": 1, "rounds": {"init": [{"round": 0, "pass@1": 0.0, "passed": 0, "wrong": 1}]}}
    two = {"problems": 1, "rounds": {"init": one["rounds"]["init"], "refine": one["rounds"]["init"]}}
    with pytest.raises(ValueError, match="same settings"):
        overall({"a": one, "b": two})
