"""Text classification: every label with its score per text, highest first. `/v1/classify`,
`/v1/moderations`, and v2 (`LABEL`, `SCORE`, `SCORES` in label order).

Example::

    served = await engine.infer(TEXT_CLASSIFICATION, "vader", ["great!"], caller=who)
    served.results[0][0].label  # -> "positive"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from openmaas.tasks.contract import Plan, TaskContract
from openmaas.tasks.names import Task
from openmaas.tasks.tensors import TEXT_INPUT, ModelFacts, Outputs, TensorSpec, decode_texts
from openmaas.tasks.text_input import TokenCounter


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    score: float


@runtime_checkable
class Classifier(TokenCounter, Protocol):
    labels: tuple[str, ...]

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        """Every label with its score, highest first."""
        ...


def ranked(labels: Sequence[str], scores: Sequence[float]) -> list[LabelScore]:
    """All labels with scores, highest first."""
    pairs = [
        LabelScore(label=label, score=float(score))
        for label, score in zip(labels, scores, strict=True)
    ]
    return sorted(pairs, key=lambda p: p.score, reverse=True)


def known_labels(facts: ModelFacts) -> list[str] | None:
    """The order of SCORES columns: the loaded model's labels, else the recorded ones."""
    loaded = getattr(facts.model, "labels", None)
    if loaded:
        return list(loaded)
    recorded = facts.params.get("labels")
    if isinstance(recorded, list) and all(isinstance(v, str) for v in recorded):
        return recorded
    return None


class TextClassificationTask(TaskContract[Sequence[str], None, list[LabelScore]]):
    name = Task.TEXT_CLASSIFICATION.value
    protocol = Classifier
    cacheable = True
    v2_input = TEXT_INPUT
    v2_output_names = ("LABEL", "SCORE", "SCORES")

    def default_params(self) -> None:
        return None

    def plan(
        self, model: Classifier, inputs: Sequence[str], params: None, *, label: str, truncate: bool
    ) -> Plan:
        return Plan(
            items=inputs, run=model.classify, key=self.name, truncate=truncate, cache_as=self.name
        )

    def v2_inputs(self, values: Sequence[bytes]) -> list[str]:
        return decode_texts(values)

    def v2_params(self, parameters: Mapping[str, object]) -> None:
        return None

    def v2_outputs(self, facts: ModelFacts) -> list[TensorSpec]:
        labels = known_labels(facts)
        return [
            TensorSpec("LABEL", "BYTES", (-1,)),
            TensorSpec("SCORE", "FP32", (-1,)),
            TensorSpec("SCORES", "FP32", (-1, len(labels) if labels else -1)),
        ]

    def v2_encode(self, results: Sequence[list[LabelScore]], facts: ModelFacts) -> Outputs:
        labels = known_labels(facts)
        if not labels:  # a runtime that names no labels: order them by name
            labels = sorted({s.label for ranking in results for s in ranking})
        column = {label: i for i, label in enumerate(labels)}
        scores = np.zeros((len(results), len(labels)), dtype=np.float32)
        for row, ranking in enumerate(results):
            for item in ranking:
                if item.label in column:
                    scores[row, column[item.label]] = item.score
        label_column = np.empty(len(results), dtype=object)
        label_column[:] = [ranking[0].label for ranking in results]
        return {
            "LABEL": label_column,
            "SCORE": np.array([r[0].score for r in results], dtype=np.float32),
            "SCORES": scores,
        }


TEXT_CLASSIFICATION = TextClassificationTask()
