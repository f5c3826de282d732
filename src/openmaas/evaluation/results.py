"""An evaluation job's result: its report (and the compared version's, with the deltas),
kept as one JSON blob in the artifact store beside the job's other files
(`jobs/<job id>/evaluation/report.json`): encrypted at rest when the store is, and rekeyed
with the jobs' area, since worst examples quote the tenant's texts.

Example::

    save_result(artifacts, job.id, EvaluationResult(report, compared, deltas(report, compared)))
    result = load_result(artifacts, job.id)  # None until the job has succeeded
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openmaas.errors import NotFound
from openmaas.evaluation.report import EvaluationReport
from openmaas.jobs.context import CHECKPOINTS_PREFIX
from openmaas.registry.artifacts import ArtifactStore


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    report: EvaluationReport
    compared: EvaluationReport | None = None  # `compare_to`'s report on the same file
    deltas: Mapping[str, float] = field(default_factory=dict)  # report minus compared

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": self.report.to_dict(),
            "compared": self.compared.to_dict() if self.compared else None,
            "deltas": dict(self.deltas),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        compared = data.get("compared")
        return cls(
            report=EvaluationReport.from_dict(data["report"]),
            compared=EvaluationReport.from_dict(compared) if compared else None,
            deltas={str(k): float(v) for k, v in dict(data.get("deltas") or {}).items()},
        )


def result_key(job_id: str) -> str:
    return f"{CHECKPOINTS_PREFIX}/{job_id}/evaluation/report.json"


def save_result(artifacts: ArtifactStore, job_id: str, result: EvaluationResult) -> None:
    artifacts.put_bytes(result_key(job_id), json.dumps(result.to_dict()).encode())


def load_result(artifacts: ArtifactStore, job_id: str) -> EvaluationResult | None:
    """The job's stored result; None when it has none (not finished, failed, cancelled)."""
    try:
        data = artifacts.get_bytes(result_key(job_id))
    except NotFound:
        return None
    return EvaluationResult.from_dict(json.loads(data))
