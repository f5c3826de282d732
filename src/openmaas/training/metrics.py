"""Classification metrics: accuracy, macro and micro precision/recall/F1, a per-class report
and the confusion matrix, computed from label indices (NumPy only).

Conventions follow scikit-learn's `precision_recall_fscore_support(zero_division=0)`: a class
never predicted has precision 0, and macro averages run over the classes that occur in either
the true or the predicted labels.

Example::

    metrics = classification_metrics([0, 1, 1], [0, 1, 0], labels=("neg", "pos"))
    metrics.summary()["macro_f1"]  # 0.6667
    metrics.report()["confusion_matrix"]  # [[1, 0], [1, 1]]: rows true, columns predicted
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class ClassReport:
    label: str
    precision: float
    recall: float
    f1: float
    support: int  # true examples of this class


@dataclass(frozen=True, slots=True)
class ClassificationMetrics:
    labels: tuple[str, ...]
    n_examples: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    weighted_f1: float
    per_class: tuple[ClassReport, ...]
    confusion: tuple[tuple[int, ...], ...]  # [true][predicted]

    def summary(self) -> dict[str, float]:
        """The scalar metrics, as registered with a model version."""
        return {
            "accuracy": self.accuracy,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "micro_precision": self.micro_precision,
            "micro_recall": self.micro_recall,
            "micro_f1": self.micro_f1,
            "weighted_f1": self.weighted_f1,
        }

    def report(self) -> dict[str, Any]:
        """The per-class report and confusion matrix, JSON-ready."""
        return {
            "labels": list(self.labels),
            "n_examples": self.n_examples,
            "per_class": [
                {
                    "label": c.label,
                    "precision": c.precision,
                    "recall": c.recall,
                    "f1": c.f1,
                    "support": c.support,
                }
                for c in self.per_class
            ],
            "confusion_matrix": [list(row) for row in self.confusion],
        }


def confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], n_labels: int
) -> npt.NDArray[np.int64]:
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def _ratio(numerator: npt.NDArray[Any], denominator: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    result = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=result, where=denominator > 0)
    return result


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> ClassificationMetrics:
    """Metrics of predictions `y_pred` against `y_true`, both indices into `labels`."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    true_positives = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = _ratio(true_positives, predicted)
    recall = _ratio(true_positives, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (support + predicted) > 0
    n = int(matrix.sum())

    def macro(values: npt.NDArray[np.float64]) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    # Single-label: every prediction is one true or one false positive, so micro precision,
    # recall and F1 all equal accuracy; computed from the counts all the same.
    tp, fp, fn = int(true_positives.sum()), int(predicted.sum()), int(support.sum())
    micro_precision = tp / fp if fp else 0.0
    micro_recall = tp / fn if fn else 0.0
    micro_sum = micro_precision + micro_recall
    return ClassificationMetrics(
        labels=tuple(labels),
        n_examples=n,
        accuracy=tp / n if n else 0.0,
        macro_precision=macro(precision),
        macro_recall=macro(recall),
        macro_f1=macro(f1),
        micro_precision=micro_precision,
        micro_recall=micro_recall,
        micro_f1=2 * micro_precision * micro_recall / micro_sum if micro_sum else 0.0,
        weighted_f1=float((f1 * support).sum() / n) if n else 0.0,
        per_class=tuple(
            ClassReport(
                label=str(label),
                precision=float(precision[i]),
                recall=float(recall[i]),
                f1=float(f1[i]),
                support=int(support[i]),
            )
            for i, label in enumerate(labels)
        ),
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
    )
