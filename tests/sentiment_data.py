"""Small sentiment data for the tests: review sentences built from templates and word lists,
labelled `positive` or `negative`, as `{"text", "label"}` examples or JSON Lines. A sentence
with two opinions ("the plot was dull but the cast was superb") takes the label of the
second. Deterministic for a seed, and learnable in seconds by a small network.

Example::

    train = reviews(400, seed=0)
    Path("train.jsonl").write_bytes(jsonl(train))
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

POSITIVE = (
    "great",
    "wonderful",
    "delightful",
    "superb",
    "brilliant",
    "charming",
    "moving",
    "excellent",
    "gripping",
    "lovely",
)
NEGATIVE = (
    "awful",
    "dreary",
    "boring",
    "terrible",
    "clumsy",
    "dull",
    "tedious",
    "bad",
    "lifeless",
    "messy",
)
SUBJECTS = (
    "the film",
    "this movie",
    "the plot",
    "the acting",
    "the soundtrack",
    "the ending",
    "the cast",
    "the script",
    "the pacing",
    "the dialogue",
)
ADVERBS = ("", "really", "quite", "truly", "rather", "so")
ENDINGS = ("", "overall", "in my opinion", "from start to finish", "for the most part")
LABELS = ("negative", "positive")


def reviews(count: int, *, seed: int) -> list[dict[str, str]]:
    """`count` labelled sentences, about half of each label."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        label = rng.choice(LABELS)
        words = POSITIVE if label == "positive" else NEGATIVE
        clause = _clause(rng, rng.choice(words))
        if rng.random() < 0.3:  # an opposite opinion first; the last one counts
            other = NEGATIVE if label == "positive" else POSITIVE
            clause = f"{_clause(rng, rng.choice(other))} but {clause}"
        examples.append({"text": clause, "label": label})
    return examples


def jsonl(examples: Sequence[dict[str, str]]) -> bytes:
    return ("\n".join(json.dumps(example) for example in examples) + "\n").encode()


def _clause(rng: random.Random, opinion: str) -> str:
    parts = [rng.choice(SUBJECTS), "was", rng.choice(ADVERBS), opinion, rng.choice(ENDINGS)]
    return " ".join(part for part in parts if part)
