"""Classification metrics against scikit-learn's on random and edge-case predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from openmaas.training.metrics import classification_metrics

LABELS = ("a", "b", "c", "d")


def _sklearn(y_true: list[int], y_pred: list[int], average: str | None) -> tuple[float, ...]:
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average=average, zero_division=0
    )
    return precision, recall, f1


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, size=200).tolist()
    # Mostly right, with class 3 never predicted: zero-division conventions matter.
    y_pred = [t if rng.random() < 0.6 else int(rng.integers(0, 3)) for t in y_true]
    y_pred = [min(p, 2) for p in y_pred]
    metrics = classification_metrics(y_true, y_pred, LABELS)

    assert metrics.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    for average in ("macro", "micro", "weighted"):
        precision, recall, f1 = _sklearn(y_true, y_pred, average)
        if average != "weighted":
            assert getattr(metrics, f"{average}_precision") == pytest.approx(precision)
            assert getattr(metrics, f"{average}_recall") == pytest.approx(recall)
        assert getattr(metrics, f"{average}_f1") == pytest.approx(f1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=range(4), zero_division=0
    )
    for i, report in enumerate(metrics.per_class):
        assert report.label == LABELS[i]
        assert (report.precision, report.recall, report.f1) == pytest.approx(
            (precision[i], recall[i], f1[i])
        )
        assert report.support == support[i]
    expected = confusion_matrix(y_true, y_pred, labels=range(4)).tolist()
    assert [list(row) for row in metrics.confusion] == expected
    assert metrics.report()["confusion_matrix"] == expected


def test_macro_averages_skip_labels_absent_from_both_sides() -> None:
    # Label "d" occurs nowhere: scikit-learn (without `labels=`) averages over a, b, c.
    y_true, y_pred = [0, 0, 1, 2, 2], [0, 1, 1, 2, 0]
    metrics = classification_metrics(y_true, y_pred, LABELS)
    precision, recall, f1 = _sklearn(y_true, y_pred, "macro")
    assert (metrics.macro_precision, metrics.macro_recall, metrics.macro_f1) == pytest.approx(
        (precision, recall, f1)
    )
    assert metrics.per_class[3].support == 0
    assert metrics.per_class[3].f1 == 0.0


def test_perfect_and_empty_predictions() -> None:
    perfect = classification_metrics([0, 1, 2, 3], [0, 1, 2, 3], LABELS)
    assert perfect.summary() == {name: 1.0 for name in perfect.summary()}
    empty = classification_metrics([], [], LABELS)
    assert empty.accuracy == 0.0
    assert empty.n_examples == 0
    assert empty.report()["confusion_matrix"] == [[0] * 4 for _ in range(4)]
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        classification_metrics([0, 1], [0], LABELS)
