"""Evaluation jobs and their reports as wire models."""

from __future__ import annotations

from openmaas.evaluation.report import EvaluationReport
from openmaas.evaluation.results import EvaluationResult
from openmaas.jobs.entities import Job
from openmaas.protocol.evaluation import EvaluationOut, EvaluationProgressOut, EvaluationReportOut


def evaluation_out(job: Job, result: EvaluationResult | None = None) -> EvaluationOut:
    options = job.options
    compare_to = options.get("compare_to")
    compare_version = options.get("compare_to_version")
    progress = job.progress
    return EvaluationOut(
        id=job.id,
        project=job.project,
        created_by=job.created_by,
        status=job.status.value,
        task=job.task,
        model=str(options.get("model") or job.base_model or ""),
        model_version=job.base_model or "",
        file=job.training_file,
        compare_to=str(compare_to) if compare_to else None,
        compare_to_version=str(compare_version) if compare_version else None,
        metrics=dict(job.metrics),
        report=report_out(result.report) if result else None,
        compared=report_out(result.compared) if result and result.compared else None,
        deltas=dict(result.deltas) if result else {},
        progress=(
            EvaluationProgressOut(examples_scored=progress.step, total=progress.total_steps)
            if progress is not None
            else None
        ),
        error=dict(job.error) if job.error else None,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
        worker_id=job.worker_id,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def report_out(report: EvaluationReport) -> EvaluationReportOut:
    return EvaluationReportOut.model_validate(report.to_dict())
