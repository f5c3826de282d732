"""Wire shapes of `/v1/evaluations`, shared by the server and the Python SDK.

Example::

    body = EvaluationCreate(model="sentiment:3", file="file-1a2b", compare_to="sentiment:2")
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from openmaas.protocol.common import Response


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1, max_length=256, description="The version to score: a reference."
    )
    file: str = Field(
        min_length=1, max_length=64, description="A dataset (file id) of labelled examples."
    )
    compare_to: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="A second reference, scored on the same file in the same job.",
    )


class ClassScoresOut(Response):
    label: str
    precision: float
    recall: float
    f1: float
    support: int  # true examples of the class (true entities of the type)
    predicted: int


class CalibrationBinOut(Response):
    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


class CalibrationOut(Response):
    ece: float
    bins: list[CalibrationBinOut]


class EntityMentionOut(Response):
    text: str
    label: str


class WorstExampleOut(Response):
    index: int  # position among the file's examples, from 0
    text: str
    score: float  # probability of the true label; a tagger's sentence entity F1
    label: str | None = None
    predicted: str | None = None
    predicted_score: float | None = None
    expected_entities: list[EntityMentionOut] | None = None
    predicted_entities: list[EntityMentionOut] | None = None


class EvaluationReportOut(Response):
    model: str  # the exact version scored: "name:version"
    task: str
    n_examples: int
    metrics: dict[str, float]
    labels: list[str] = Field(default_factory=list)
    per_class: list[ClassScoresOut] = Field(default_factory=list)
    confusion_matrix: list[list[int]] | None = None  # [true][predicted], in `labels` order
    calibration: CalibrationOut | None = None
    worst_examples: list[WorstExampleOut] = Field(default_factory=list)


class EvaluationProgressOut(Response):
    examples_scored: int  # both versions' together when comparing
    total: int | None = None


class EvaluationOut(Response):
    id: str
    object: Literal["evaluation"] = "evaluation"
    project: str
    created_by: str
    status: str
    task: str
    model: str  # the reference as given
    model_version: str  # "name:version" it was pinned to
    file: str
    compare_to: str | None = None
    compare_to_version: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)  # the model's, once succeeded
    # The full reports and deltas (model minus compare_to): on GET of one evaluation.
    report: EvaluationReportOut | None = None
    compared: EvaluationReportOut | None = None
    deltas: dict[str, float] = Field(default_factory=dict)
    progress: EvaluationProgressOut | None = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    attempts: int = 0
    worker_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")
