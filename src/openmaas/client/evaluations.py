"""Evaluations: a registered version scored on a labelled file (accuracy, macro/micro
precision/recall/F1, per-class report, confusion matrix, calibration; entity F1 for
taggers; the worst examples), optionally beside a second version on the same file.

Example::

    evaluation = client.create_evaluation("sentiment:3", "file-1a2b", compare_to="sentiment:2")
    evaluation = client.wait_for_evaluation(evaluation.id)
    print(evaluation.metrics["macro_f1"], evaluation.deltas["macro_f1"])
    print(evaluation.report.confusion_matrix, evaluation.report.worst_examples[0].text)
"""

from __future__ import annotations

from openmaas.client.resource import Resource, segment, wait_until
from openmaas.protocol.evaluation import EvaluationCreate, EvaluationOut
from openmaas.protocol.training import PageOut, TrainingEventOut


class EvaluationsResource(Resource):
    """`/v1/evaluations`."""

    def create_evaluation(
        self, model: str, file: str, *, compare_to: str | None = None
    ) -> EvaluationOut:
        """Queue an evaluation of the registered `model` (a reference) on the dataset `file`
        (a file id), and of `compare_to` on the same file when given."""
        body = EvaluationCreate(model=model, file=file, compare_to=compare_to)
        payload = body.model_dump(mode="json", exclude_none=True)
        return self._one("POST", "/v1/evaluations", EvaluationOut, json=payload)

    def list_evaluations(
        self, *, model: str | None = None, after: str | None = None, limit: int = 20
    ) -> PageOut[EvaluationOut]:
        """Newest first (of the version `model` resolves to, when given); pass the last id
        as `after` for the next page. Items carry metrics, not the full report."""
        params: dict[str, str | int] = {"limit": limit}
        if model is not None:
            params["model"] = model
        if after is not None:
            params["after"] = after
        return self._one("GET", "/v1/evaluations", PageOut[EvaluationOut], params=params)

    def get_evaluation(self, evaluation_id: str) -> EvaluationOut:
        """One evaluation, with its full report once it has succeeded."""
        return self._one("GET", _path(evaluation_id), EvaluationOut)

    def cancel_evaluation(self, evaluation_id: str) -> EvaluationOut:
        return self._one("POST", f"{_path(evaluation_id)}/cancel", EvaluationOut)

    def evaluation_events(
        self, evaluation_id: str, *, after: int | None = None, limit: int = 100
    ) -> PageOut[TrainingEventOut]:
        """Oldest first; pass the last id as `after` to follow the evaluation."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        path = f"{_path(evaluation_id)}/events"
        return self._one("GET", path, PageOut[TrainingEventOut], params=params)

    def wait_for_evaluation(
        self, evaluation_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None
    ) -> EvaluationOut:
        """Block until the evaluation has finished (succeeded, failed or cancelled)."""
        return wait_until(
            lambda: self.get_evaluation(evaluation_id),
            lambda evaluation: evaluation.finished,
            lambda evaluation: f"evaluation {evaluation_id} is still {evaluation.status}",
            poll_s=poll_s,
            timeout_s=timeout_s,
        )


def _path(evaluation_id: str) -> str:
    return f"/v1/evaluations/{segment(evaluation_id)}"
