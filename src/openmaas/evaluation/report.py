"""What an evaluation reports: flat metrics, a per-class (or per-entity-type) table, the
confusion matrix and calibration of a classifier, and the worst-scored examples; and the
deltas between two reports on the same file. JSON-ready both ways (`to_dict`, `from_dict`):
an evaluation job stores its report as JSON in the artifact store.

Example::

    report = score(model, "text-classification", examples)
    report.metrics["macro_f1"], report.calibration.ece, report.worst_examples[0].text
    deltas(candidate_report, production_report)  # {"accuracy": 0.031, ...}: first minus second
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openmaas.evaluation.calibration import Calibration


@dataclass(frozen=True, slots=True)
class EntityMention:
    text: str
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label}


@dataclass(frozen=True, slots=True)
class WorstExample:
    """One badly scored example. Classification: `score` is the probability the model gave
    the true `label`; tagging: the sentence's entity F1, with both entity lists."""

    index: int  # the example's position among the file's examples, from 0
    text: str  # truncated to `TEXT_CHARS` characters
    score: float
    label: str | None = None  # the true label (classification)
    predicted: str | None = None  # the model's top label (classification)
    predicted_score: float | None = None
    expected_entities: tuple[EntityMention, ...] | None = None  # tagging
    predicted_entities: tuple[EntityMention, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index, "text": self.text, "score": self.score}
        for name in ("label", "predicted", "predicted_score"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        for name in ("expected_entities", "predicted_entities"):
            mentions = getattr(self, name)
            if mentions is not None:
                data[name] = [m.to_dict() for m in mentions]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorstExample:
        def mentions(name: str) -> tuple[EntityMention, ...] | None:
            values = data.get(name)
            if values is None:
                return None
            return tuple(EntityMention(str(v["text"]), str(v["label"])) for v in values)

        predicted_score = data.get("predicted_score")
        return cls(
            index=int(data["index"]),
            text=str(data["text"]),
            score=float(data["score"]),
            label=data.get("label"),
            predicted=data.get("predicted"),
            predicted_score=float(predicted_score) if predicted_score is not None else None,
            expected_entities=mentions("expected_entities"),
            predicted_entities=mentions("predicted_entities"),
        )


@dataclass(frozen=True, slots=True)
class ClassScores:
    """A class's (classification) or an entity type's (tagging) own scores."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int  # true examples of the class, or true entities of the type
    predicted: int  # examples predicted as the class, or entities of the type predicted

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "predicted": self.predicted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassScores:
        return cls(
            label=str(data["label"]),
            precision=float(data["precision"]),
            recall=float(data["recall"]),
            f1=float(data["f1"]),
            support=int(data["support"]),
            predicted=int(data["predicted"]),
        )


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """A model scored on labelled examples (see the module's docstring)."""

    task: str
    model: str  # the exact version scored: "name:version"
    n_examples: int
    metrics: Mapping[str, float]  # flat: accuracy, macro_f1, micro_f1, ece | entity_f1, ...
    labels: tuple[str, ...] = ()  # confusion-matrix order (classification)
    per_class: tuple[ClassScores, ...] = ()
    confusion_matrix: tuple[tuple[int, ...], ...] | None = None  # [true][predicted]
    calibration: Calibration | None = None
    worst_examples: tuple[WorstExample, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model,
            "n_examples": self.n_examples,
            "metrics": dict(self.metrics),
            "labels": list(self.labels),
            "per_class": [c.to_dict() for c in self.per_class],
            "confusion_matrix": (
                [list(row) for row in self.confusion_matrix]
                if self.confusion_matrix is not None
                else None
            ),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "worst_examples": [w.to_dict() for w in self.worst_examples],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        matrix = data.get("confusion_matrix")
        calibration = data.get("calibration")
        return cls(
            task=str(data["task"]),
            model=str(data["model"]),
            n_examples=int(data["n_examples"]),
            metrics={str(k): float(v) for k, v in dict(data["metrics"]).items()},
            labels=tuple(str(label) for label in data.get("labels") or ()),
            per_class=tuple(ClassScores.from_dict(c) for c in data.get("per_class") or ()),
            confusion_matrix=(
                tuple(tuple(int(v) for v in row) for row in matrix) if matrix is not None else None
            ),
            calibration=Calibration.from_dict(calibration) if calibration else None,
            worst_examples=tuple(
                WorstExample.from_dict(w) for w in data.get("worst_examples") or ()
            ),
        )


def deltas(first: EvaluationReport, second: EvaluationReport) -> dict[str, float]:
    """`first` minus `second` for every metric both report (positive: `first` scored
    higher; for `ece` lower is better)."""
    return {
        name: float(value) - float(second.metrics[name])
        for name, value in first.metrics.items()
        if name in second.metrics
    }
