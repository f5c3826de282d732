"""The order training items are batched in: shuffled, or grouped by length.

Padding every text of a batch to its longest costs compute in proportion to the longest;
on short, varied texts (SST-2 phrases: 3 to 60 tokens) most of a randomly drawn batch is
padding. Length grouping (as `transformers.Trainer`'s `group_by_length` and fairseq's
bucketing) shuffles, cuts the order into mega-batches of `MEGABATCH_BATCHES` batches, sorts
each by length so that neighbours in a batch are near in length, then shuffles the batches:
every item once per epoch, batches still random in content and order, little padding.

Example::

    rng = np.random.default_rng([seed, epoch])
    order = length_grouped(rng.permutation(len(texts)).tolist(), lengths, 32, rng)
    batches = [order[i : i + 32] for i in range(0, len(order), 32)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Batches per sorted mega-batch: Trainer's LengthGroupedSampler uses 50; wider sorts pad
# less but make batches less random.
MEGABATCH_BATCHES = 50


def length_grouped(
    order: Sequence[int],
    lengths: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
    megabatch_batches: int = MEGABATCH_BATCHES,
) -> list[int]:
    """`order` (item indices, already shuffled) rearranged so that each consecutive run of
    `batch_size` holds items of near-equal `lengths[i]`, the batches in random order. A
    last, partial batch stays last, so cutting the result every `batch_size` items gives
    the batches."""
    megabatch = batch_size * megabatch_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), megabatch):
        # A stable sort: ties keep their shuffled order.
        sorted_part = sorted(order[start : start + megabatch], key=lambda i: -lengths[i])
        batches += [sorted_part[i : i + batch_size] for i in range(0, len(sorted_part), batch_size)]
    partial = batches.pop() if batches and len(batches[-1]) < batch_size else None
    shuffled = [batches[i] for i in rng.permutation(len(batches))]
    if partial is not None:
        shuffled.append(partial)
    return [index for batch in shuffled for index in batch]
