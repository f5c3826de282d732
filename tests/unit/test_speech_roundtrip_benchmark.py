"""The speech round-trip benchmark's scoring: word edits and the normalization both sides get."""

from __future__ import annotations

import pytest
from benchmarks.speech_roundtrip import HARVARD, lists, normalize, word_edits, word_error_rate


def test_normalize_drops_case_punctuation_and_apostrophes_and_spells_numbers() -> None:
    assert normalize("It's 50 bonds, sold!") == ["its", "fifty", "bonds", "sold"]
    assert normalize("The 4 hours; 21 boys.") == ["the", "four", "hours", "twenty", "one", "boys"]
    assert normalize("1999") == ["1999"]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "edits"),
    [
        ("a b c", "a b c", 0),
        ("a b c", "a x c", 1),  # substitution
        ("a b c", "a c", 1),  # deletion
        ("a b c", "a b b c", 1),  # insertion
        ("a b c", "", 3),
        ("", "a b", 2),
    ],
)
def test_word_edits(reference: str, hypothesis: str, edits: int) -> None:
    assert word_edits(reference.split(), hypothesis.split()) == edits


def test_word_error_rate_is_over_the_whole_set() -> None:
    # 1 edit in 4 words and 0 in 6: 10% over the set (not the 12.5% mean of the two).
    assert word_error_rate(["a b c d", "e f g h i j"], ["a b c x", "e f g h i j"]) == 0.1


def test_the_harvard_lists() -> None:
    assert len(HARVARD) == 40
    assert [text.count(".") for text in lists(HARVARD)] == [10, 10, 10, 10]
