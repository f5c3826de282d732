"""Entity-level NER metrics: spans read from tags as conlleval reads them, exact-match
precision/recall/F1 with a per-type report, checked on hand-worked cases and against
`seqeval` (conlleval's rules) on random, often broken, tag sequences."""

from __future__ import annotations

import random

import pytest

from openmaas.training.ner_metrics import Span, entity_metrics, entity_spans


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [Span("PER", 0, 2), Span("LOC", 3, 4)]),
        # I- after O, or after another type, opens an entity (conlleval).
        (["O", "I-PER", "I-PER"], [Span("PER", 1, 3)]),
        (["B-PER", "I-LOC", "I-LOC"], [Span("PER", 0, 1), Span("LOC", 1, 3)]),
        # B- after an entity of the same type opens a new one.
        (["B-PER", "B-PER", "I-PER"], [Span("PER", 0, 1), Span("PER", 1, 3)]),
        # An entity running to the end of the sentence is closed there.
        (["O", "B-ORG", "I-ORG"], [Span("ORG", 1, 3)]),
        # BIOES: E- and S- end their entity; I- after them opens one.
        (
            ["S-PER", "B-LOC", "E-LOC", "I-LOC"],
            [Span("PER", 0, 1), Span("LOC", 1, 3), Span("LOC", 3, 4)],
        ),
        (["O", "O"], []),
        ([], []),
    ],
)
def test_entity_spans_follow_conlleval(tags: list[str], spans: list[Span]) -> None:
    assert entity_spans(tags) == spans


def test_a_type_error_costs_a_false_positive_and_a_false_negative() -> None:
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG"]]
    metrics = entity_metrics(true, predicted)
    # 3 true, 3 predicted, 2 right (PER and the second ORG).
    assert (metrics.n_true, metrics.n_predicted, metrics.n_correct) == (3, 3, 2)
    assert metrics.summary() == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "accuracy": 5 / 6}
    )
    report = {t["label"]: t for t in metrics.report()["per_type"]}
    assert list(report) == ["LOC", "ORG", "PER"]
    assert report["PER"] == {
        "label": "PER",
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 1,
        "predicted": 1,
    }
    assert report["LOC"] == {
        "label": "LOC",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
        "predicted": 0,
    }
    assert report["ORG"]["precision"] == 0.5
    assert report["ORG"]["recall"] == 1.0
    assert report["ORG"]["f1"] == pytest.approx(2 / 3)
    assert (report["ORG"]["support"], report["ORG"]["predicted"]) == (1, 2)


def test_a_partly_right_span_counts_nothing() -> None:
    metrics = entity_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert (metrics.precision, metrics.recall, metrics.f1) == (0.0, 0.0, 0.0)
    assert metrics.accuracy == pytest.approx(2 / 3)


def test_precision_and_recall_are_weighted_by_entity_not_by_type() -> None:
    # Micro: 4 PER all found, 1 LOC missed -> recall 4/5; macro would give (1 + 0) / 2.
    true = [["B-PER", "O", "B-PER"], ["B-PER", "B-PER", "O", "B-LOC"]]
    predicted = [["B-PER", "O", "B-PER"], ["B-PER", "B-PER", "O", "O"]]
    metrics = entity_metrics(true, predicted)
    assert (metrics.precision, metrics.recall) == (1.0, 0.8)
    assert metrics.f1 == pytest.approx(2 * 0.8 / 1.8)


def test_edge_cases_divide_by_nothing_as_zero() -> None:
    nothing_predicted = entity_metrics([["B-PER", "O"]], [["O", "O"]])
    assert (nothing_predicted.precision, nothing_predicted.recall, nothing_predicted.f1) == (
        0.0,
        0.0,
        0.0,
    )
    nothing_true = entity_metrics([["O", "O"]], [["B-LOC", "O"]])
    assert (nothing_true.precision, nothing_true.recall, nothing_true.accuracy) == (0.0, 0.0, 0.5)
    empty = entity_metrics([], [])
    assert empty.summary() == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    assert empty.per_type == ()
    assert entity_metrics([["O"]], [["O"]]).accuracy == 1.0


def test_entities_never_cross_sentences() -> None:
    # Joined, I-PER would continue the first sentence's PER; apart they are two entities.
    metrics = entity_metrics([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])
    assert (metrics.n_true, metrics.n_correct) == (2, 2)
    assert metrics.f1 == 1.0


def test_mismatched_lengths_and_unknown_tags_are_errors() -> None:
    with pytest.raises(ValueError, match="2 true sentences but 1 predicted"):
        entity_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1 predicted"):
        entity_metrics([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="'PER' is not O or B-, I-, E-, S-"):
        entity_spans(["O", "PER"])
    with pytest.raises(ValueError, match="'X-PER'"):
        entity_spans(["X-PER"])


def test_the_figures_match_seqeval_on_random_broken_tag_sequences() -> None:
    seqeval_metrics = pytest.importorskip("seqeval.metrics")
    rng = random.Random(7)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]
    true = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    # Predictions: the truth with a quarter of the tags changed at random.
    predicted = [[t if rng.random() > 0.25 else rng.choice(tags) for t in row] for row in true]
    metrics = entity_metrics(true, predicted)
    assert metrics.precision == pytest.approx(seqeval_metrics.precision_score(true, predicted))
    assert metrics.recall == pytest.approx(seqeval_metrics.recall_score(true, predicted))
    assert metrics.f1 == pytest.approx(seqeval_metrics.f1_score(true, predicted))
    assert metrics.accuracy == pytest.approx(seqeval_metrics.accuracy_score(true, predicted))
    expected = seqeval_metrics.classification_report(true, predicted, output_dict=True)
    for row in metrics.per_type:
        assert row.precision == pytest.approx(expected[row.label]["precision"])
        assert row.recall == pytest.approx(expected[row.label]["recall"])
        assert row.f1 == pytest.approx(expected[row.label]["f1-score"])
        assert row.support == expected[row.label]["support"]
