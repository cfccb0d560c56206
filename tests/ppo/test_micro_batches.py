"""`length_groups`: micro-batches of similar prompt length and the prompt width each keeps."""
import numpy as np
import pytest

from ledex_jax.ppo.micro_batches import length_groups


def test_rows_are_grouped_by_length_and_cut_to_the_smallest_width_that_holds_them():
    lens = np.array([30, 5, 17, 6, 40, 3, 16, 25])
    groups = length_groups(np.arange(8), lens, 4, 48, (16, 24, 32, 48))
    assert [(rows.tolist(), keep) for rows, keep in groups] == [
        ([1, 5], 16), ([3, 6], 16), ([2, 7], 32), ([0, 4], 48)]


def test_a_subset_of_rows_and_widths_capped_at_the_padded_width():
    lens = np.array([30, 5, 17, 6, 40, 3, 16, 25])
    groups = length_groups(np.array([7, 0, 2, 4]), lens, 2, 44, (16, 24, 32, 48, 64))
    assert [(rows.tolist(), keep) for rows, keep in groups] == [([2, 7], 32), ([0, 4], 44)]
    assert [keep for _, keep in length_groups(np.arange(8), lens, 2, 48, (48,))] == [48, 48]


def test_rows_that_do_not_split_evenly_are_refused():
    with pytest.raises(ValueError, match="6 rows do not split into 4 equal micro-batches"):
        length_groups(np.arange(6), np.ones(6, int), 4, 16, (16,))
