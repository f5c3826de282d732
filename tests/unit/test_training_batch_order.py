"""Length-grouped batch order: every item once, batches of near-equal lengths, random batch
order that a seed fixes."""

from __future__ import annotations

import numpy as np

from openmaas.training.batch_order import MEGABATCH_BATCHES, length_grouped

BATCH = 8


def batches_of(order: list[int]) -> list[list[int]]:
    return [order[i : i + BATCH] for i in range(0, len(order), BATCH)]


def grouped(lengths: list[int], seed: int, epoch: int, megabatch_batches: int = 4) -> list[int]:
    rng = np.random.default_rng([seed, epoch])
    shuffled = rng.permutation(len(lengths)).tolist()
    return length_grouped(shuffled, lengths, BATCH, rng, megabatch_batches=megabatch_batches)


LENGTHS = [int(n) for n in np.random.default_rng(7).integers(3, 60, size=203)]


def test_every_index_appears_once_and_only_the_last_batch_is_partial() -> None:
    order = grouped(LENGTHS, seed=0, epoch=0)
    assert sorted(order) == list(range(len(LENGTHS)))
    sizes = [len(batch) for batch in batches_of(order)]
    assert sizes == [BATCH] * (len(LENGTHS) // BATCH) + [len(LENGTHS) % BATCH]


def test_batches_pad_far_less_than_shuffled_ones() -> None:
    def padding(order: list[int]) -> int:
        return sum(
            len(batch) * max(LENGTHS[i] for i in batch) - sum(LENGTHS[i] for i in batch)
            for batch in batches_of(order)
        )

    shuffled = np.random.default_rng(0).permutation(len(LENGTHS)).tolist()
    order = grouped(LENGTHS, seed=0, epoch=0, megabatch_batches=MEGABATCH_BATCHES)
    assert padding(order) < padding(shuffled) / 3
    # One mega-batch here: a batch holds neighbours in the sorted lengths.
    spreads = [
        max(LENGTHS[i] for i in batch) - min(LENGTHS[i] for i in batch)
        for batch in batches_of(order)
    ]
    assert np.median(spreads) <= 4  # of lengths 3 to 59


def test_the_order_is_fixed_by_the_seed_and_changes_with_the_epoch() -> None:
    first = grouped(LENGTHS, seed=3, epoch=0)
    assert grouped(LENGTHS, seed=3, epoch=0) == first
    assert grouped(LENGTHS, seed=3, epoch=1) != first
    assert grouped(LENGTHS, seed=4, epoch=0) != first


def test_batch_order_is_random_not_longest_first() -> None:
    longest = [max(LENGTHS[i] for i in batch) for batch in batches_of(grouped(LENGTHS, 0, 0))]
    full = longest[:-1]
    assert full != sorted(full, reverse=True)
    assert full != sorted(full)


def test_a_split_smaller_than_a_batch_is_one_batch() -> None:
    rng = np.random.default_rng(0)
    assert sorted(length_grouped([2, 0, 1], [5, 1, 3], BATCH, rng)) == [0, 1, 2]
    assert length_grouped([], [], BATCH, rng) == []
