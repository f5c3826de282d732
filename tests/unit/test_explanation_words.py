"""Words for explanations: the input cut as written, token scores summed into words, words
deleted with the explained span following them, and occlusion over any parts."""

from __future__ import annotations

from openmaas.tasks.explanation import tag_kind, target_choices
from openmaas.tasks.explanation_words import (
    delete_words,
    shifted_span,
    split_words,
    words_of_tokens,
)
from openmaas.tasks.occlusion import occlusion


def test_words_keep_their_spelling_and_offsets() -> None:
    text = "Unbelievably dull, don't watch it... n't   ok_go"
    words = split_words(text)
    assert [w.text for w in words] == [
        "Unbelievably", "dull", ",", "don't", "watch", "it", "...", "n't", "ok", "_", "go",
    ]  # fmt: skip
    assert all(text[w.start : w.end] == w.text for w in words)


def test_subword_scores_sum_into_their_words() -> None:
    words = split_words("Unbelievably dull.")
    # [CLS] un ##believ ##ably dull. [SEP]: a piece spanning two words is split between them.
    offsets = [(0, 0), (0, 2), (2, 8), (8, 12), (13, 18), (0, 0)]
    scores = [9.0, 0.25, 0.25, 0.5, 0.5, 9.0]
    assert words_of_tokens(words, offsets, scores) == [1.0, 0.25, 0.25]


def test_deleting_words_moves_the_span_after_them() -> None:
    text = "Nelson Mandela met Barack Obama"
    words = split_words(text)
    assert delete_words(text, words, [2]) == "Nelson Mandela  Barack Obama"
    assert shifted_span((19, 31), words, [2]) == (16, 28)
    assert shifted_span((19, 31), words, [0]) == (13, 25)
    assert shifted_span((19, 25), words, [3]) == (19, 19)  # the whole entity is gone
    assert shifted_span((0, 14), words, [4]) == (0, 14)


def test_occlusion_scores_each_part_by_the_drop_without_it() -> None:
    weights = {"a": 0.1, "b": 0.7, "c": 0.0}
    parts = list(weights)

    def score(inputs: object) -> list[float]:
        return [sum(weights[p] for p in kept) for kept in inputs]  # type: ignore[attr-defined]

    drops = occlusion(
        parts=len(parts),
        without=lambda i: [p for j, p in enumerate(parts) if j != i],
        score=score,
        full_score=0.8,
    )
    assert [round(d, 6) for d in drops] == [0.1, 0.7, 0.0]


def test_a_tagger_is_explained_by_entity_types() -> None:
    assert [tag_kind(t) for t in ("B-PER", "I-LOC", "O", "PERSON", "S-ORG")] == [
        "PER", "LOC", None, "PERSON", "ORG",
    ]  # fmt: skip

    class Tagger:
        tasks = frozenset({"token-classification"})
        labels = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")

    assert target_choices(Tagger()) == ["PER", "LOC"]
