"""Occlusion: how much a model's score for the explained label drops when one part of the
input is taken away, for every part. It needs nothing of the model but its normal scoring,
so it explains any model (ONNX graphs, spaCy pipelines, rule models, linear heads); a part is
a word of a text, or a region of an image (`tasks.image_explanation_runner`).

The perturbed inputs are scored in chunks of `CHUNK_INPUTS`, each chunk one call of the
model's batch method, so a text of n words costs n + 1 forward passes in about n / 64 calls.

Example::

    drops = occlusion(
        parts=len(words),
        without=lambda i: delete_words(text, words, [i]),
        score=lambda texts: [probability(label, t) for t in texts],
        full_score=probability(label, text),
    )
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

InputT = TypeVar("InputT")

# Perturbed inputs per call of the model's batch method (it sub-batches them itself).
CHUNK_INPUTS = 64


def occlusion(
    *,
    parts: int,
    without: Callable[[int], InputT],
    score: Callable[[Sequence[InputT]], Sequence[float]],
    full_score: float,
    chunk_inputs: int = CHUNK_INPUTS,
) -> list[float]:
    """Per part: the full input's score minus the score of the input without that part
    (positive: the part supported the label). `chunk_inputs`: fewer where one perturbed
    input is large (an image)."""
    drops: list[float] = []
    for start in range(0, parts, chunk_inputs):
        chunk = [without(i) for i in range(start, min(parts, start + chunk_inputs))]
        drops.extend(full_score - float(s) for s in score(chunk))
    return drops
