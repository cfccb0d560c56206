"""pass@k against brute force: enumerate every k-subset of n samples."""
import itertools
import math

import pytest

from ledex_jax.evaluate.pass_at_k import (count_correct, mean_pass_at_k, parse_ks, pass_at_k,
                                          pass_at_k_per_task)


def brute_force(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_matches_enumeration_of_all_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_matches_exact_binomials_where_they_overflow_floats():
    n = 1000  # C(1000, 500) ~ 1e299: the naive ratio of float binomials is inf/inf
    for c, k in [(1, 1), (1, 10), (3, 100), (500, 10), (990, 10), (0, 5)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # exact integer division
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(100, 37, 1) == pytest.approx(0.37)


def test_n_smaller_than_k_is_an_error_naming_the_task():
    with pytest.raises(ValueError, match="at least 10 samples"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError, match="task Mbpp/2"):
        pass_at_k_per_task({"Mbpp/2": (5, 1)}, 10)


@pytest.mark.parametrize("args", [(5, 6, 1), (5, -1, 1), (5, 1, 0)])
def test_inconsistent_counts_are_errors(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_non_integers_are_rejected():
    with pytest.raises(TypeError):
        pass_at_k(10, 2.5, 1)


def test_mean_over_tasks_and_counting():
    counts = count_correct([("a", True), ("b", False), ("a", False), ("b", False), ("a", True)])
    assert counts == {"a": (3, 2), "b": (2, 0)}
    means = mean_pass_at_k(counts, ks=(1, 2))
    assert means["pass@1"] == pytest.approx((2 / 3 + 0) / 2)
    assert means["pass@2"] == pytest.approx((brute_force(3, 2, 2) + 0) / 2)
    with pytest.raises(ValueError, match="no tasks"):
        mean_pass_at_k({})


def test_parse_ks():
    assert parse_ks("1,10") == (1, 10)
    assert parse_ks(" 1, 1 ,100") == (1, 100)
    for bad in ("", "0", "1,x", "-1"):
        with pytest.raises(ValueError):
            parse_ks(bad)
