"""Pieces of the ONNX methods that need no model: taggers compared by their entities, the texts
static quantization calibrates on, and the same-shape batches Percentile calibration needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from openmaas.optimize.graphs import uniform_batches
from openmaas.optimize.measure import compare_outputs
from openmaas.optimize.onnx_methods import NETWORK_ARCHITECTURES, calibration_texts
from openmaas.tasks.token_classification import Entity

TEXTS = ("Ada visited Paris.", "ok")
ADA = Entity("Ada", "PER", 0, 3, 0.9)
PARIS = Entity("Paris", "LOC", 12, 17, 0.8)


class Tagger:
    """Answers the same entities for every call, as a deterministic tagger does."""

    def __init__(self, *found: list[Entity]) -> None:
        self.found = list(found)

    def extract_entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        return self.found[: len(texts)]


def test_identical_entities_agree_fully_and_differ_by_their_scores() -> None:
    parent = Tagger([ADA, PARIS], [])
    child = Tagger([Entity("Ada", "PER", 0, 3, 0.85), PARIS], [])
    quality = compare_outputs(parent, child, "token-classification", TEXTS)
    assert quality.metrics["builtin_entity_agreement_with_parent"] == 1.0
    assert quality.metrics["builtin_entities_of_parent"] == 2
    assert abs(quality.max_abs_difference - 0.05) < 1e-9


def test_a_missed_or_relabelled_entity_lowers_agreement_and_fails_an_export_check() -> None:
    parent = Tagger([ADA, PARIS], [])
    child = Tagger([ADA, Entity("Paris", "PER", 12, 17, 0.8)], [])
    quality = compare_outputs(parent, child, "token-classification", TEXTS)
    # Shared: Ada; either: Ada, Paris/LOC, Paris/PER.
    assert quality.metrics["builtin_entity_agreement_with_parent"] == 1 / 3
    assert quality.max_abs_difference == 1.0  # above any atol


def test_no_entities_on_either_side_is_full_agreement() -> None:
    quality = compare_outputs(Tagger([], []), Tagger([], []), "token-classification", TEXTS)
    assert quality.metrics["builtin_entity_agreement_with_parent"] == 1.0
    assert quality.max_abs_difference == 0.0


def test_calibration_reads_texts_and_tagged_sentences() -> None:
    examples: list[dict[str, Any]] = [
        {"text": "a fine film", "label": "positive"},
        {"tokens": ["Ada", "visited", "Paris"], "tags": ["B-PER", "O", "B-LOC"]},
        {"text": "", "label": "negative"},
    ]
    assert calibration_texts(examples) == ["a fine film", "Ada visited Paris"]


def test_uniform_batches_pad_to_the_widest_and_fill_the_last_batch() -> None:
    feeds = [
        {"ids": np.ones((3, 4), np.int64), "lengths": np.array([4, 2, 1])},
        {"ids": np.full((2, 7), 2, np.int64), "lengths": np.array([7, 5])},
    ]
    batches = uniform_batches(feeds, rows=4)
    assert [batch["ids"].shape for batch in batches] == [(4, 7), (4, 7)]
    assert batches[0]["ids"][0].tolist() == [1, 1, 1, 1, 0, 0, 0]  # padded with 0
    # Five rows, then the first three again to fill the second batch.
    assert np.concatenate([b["lengths"] for b in batches]).tolist() == [4, 2, 1, 7, 5, 4, 2, 1]


def test_the_methods_apply_to_the_network_architectures_the_export_handles() -> None:
    from openmaas.nn.saved import ARCHITECTURES
    from openmaas.optimize.nn_graphs import ARCHITECTURES as EXPORTED

    assert NETWORK_ARCHITECTURES == EXPORTED
    assert ARCHITECTURES.keys() >= NETWORK_ARCHITECTURES
