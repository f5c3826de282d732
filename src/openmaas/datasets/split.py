"""Deterministic, stratified train / validation / test splits.

Each example's place is decided by sha256(seed, example): the same examples and seed give
the same split on any machine, in any row order, with any Python version. Text
classification is stratified by label: within every label each split gets its share
rounded down or up (so a label's count in a split is within one example of its exact
share), and the roundings are chosen so the split sizes stay on target too. Other tasks
split their examples (for token classification: sentences) the same way, as one group.

Example::

    train, validation, test = split_examples(examples, Task.TEXT_CLASSIFICATION, seed=7)
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from openmaas.datasets.formats import Example, canonical_json
from openmaas.errors import InvalidRequest
from openmaas.tasks.names import Task

Ratios = tuple[float, float, float]
DEFAULT_RATIOS: Ratios = (0.8, 0.1, 0.1)
SPLIT_NAMES = ("train", "validation", "test")


class DatasetSplits(NamedTuple):
    train: list[Example]
    validation: list[Example]
    test: list[Example]


def check_ratios(ratios: Sequence[float]) -> Ratios:
    """(train, validation, test) shares: two or three numbers >= 0 adding up to 1 (two mean
    no test split); train must be above 0."""
    values = [float(value) for value in ratios]
    if len(values) == 2:
        values.append(0.0)
    problem = None
    if len(values) != 3:
        problem = "give two or three numbers: train, validation[, test]"
    elif not all(math.isfinite(v) and v >= 0 for v in values):
        problem = "every ratio must be a number >= 0"
    elif abs(sum(values) - 1.0) > 1e-6:
        problem = f"the ratios add up to {sum(values):g}, not 1"
    elif values[0] <= 0:
        problem = "the train ratio must be above 0"
    if problem is not None:
        raise InvalidRequest(f"ratios {list(ratios)}: {problem}", param="ratios")
    return values[0], values[1], values[2]


def parse_ratios(text: str) -> Ratios:
    """`"0.8,0.1,0.1"` as ratios."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidRequest(
            f"ratios {text!r}: write numbers separated by commas, e.g. 0.8,0.1,0.1",
            param="ratios",
        ) from None
    return check_ratios(values)


def split_examples(
    examples: Sequence[Example],
    task: Task,
    *,
    seed: int,
    ratios: Sequence[float] = DEFAULT_RATIOS,
) -> DatasetSplits:
    """Split `examples`; each split keeps the examples' original order."""
    given = check_ratios(ratios)
    total = sum(given)  # within 1e-6 of 1: made exact, so the shares of n add up to n
    shares = (given[0] / total, given[1] / total, given[2] / total)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        groups[_stratum(example, task)].append(index)
    salt = f"openmaas-split:{seed}\n".encode()
    expected = [0.0, 0.0, 0.0]
    assigned = [0, 0, 0]
    chosen: list[list[int]] = [[], [], []]
    for stratum in sorted(groups):
        members = groups[stratum]
        # Identical examples get the same key; the index orders them, and they are
        # interchangeable, so the result does not depend on the file's row order.
        members.sort(key=lambda i: (hashlib.sha256(salt + canonical_json(examples[i])).digest(), i))
        counts = _counts(len(members), shares, expected, assigned)
        start = 0
        for split, count in enumerate(counts):
            chosen[split].extend(members[start : start + count])
            start += count
    train, validation, test = ([examples[i] for i in sorted(part)] for part in chosen)
    return DatasetSplits(train, validation, test)


def _stratum(example: Mapping[str, Any], task: Task) -> str:
    labelled = task in (Task.TEXT_CLASSIFICATION, Task.IMAGE_CLASSIFICATION)
    return str(example["label"]) if labelled else ""


def _counts(n: int, shares: Ratios, expected: list[float], assigned: list[int]) -> list[int]:
    """How many of a group of `n` go to each split: each share rounded down, the remaining
    few to the splits furthest behind their running target (largest remainder, carried
    across groups). Updates `expected` and `assigned`."""
    quotas = [round(n * share, 9) for share in shares]
    counts = [math.floor(quota) for quota in quotas]
    for split in range(3):
        expected[split] += quotas[split]
    behind = sorted(
        (split for split in range(3) if shares[split] > 0),
        key=lambda split: (-(expected[split] - assigned[split] - counts[split]), split),
    )
    for extra in range(n - sum(counts)):  # fewer than the splits with a share
        counts[behind[extra % len(behind)]] += 1
    for split in range(3):
        assigned[split] += counts[split]
    return counts
