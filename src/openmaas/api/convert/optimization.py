"""Optimization jobs as wire models."""

from __future__ import annotations

from typing import Any

from openmaas.jobs.entities import Job
from openmaas.jobs.publish import VARIANT_OF
from openmaas.protocol.optimization import OptimizationJobOut


def optimization_job_out(job: Job) -> OptimizationJobOut:
    parent = job.options.get("base_version")
    return OptimizationJobOut(
        id=job.id,
        project=job.project,
        created_by=job.created_by,
        status=job.status.value,
        method=job.recipe,
        task=job.task,
        model=job.base_model or "",
        parent_version=str(parent) if parent else None,
        settings=dict(job.hyperparameters),
        model_name=job.model_name,
        alias=job.alias,
        eval_file=job.validation_file,
        training_file=job.training_file or None,
        optimized_model=job.fine_tuned_model,
        variant_of=_pinned(job.options.get(VARIANT_OF)),
        metrics=dict(job.metrics),
        error=dict(job.error) if job.error else None,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
        worker_id=job.worker_id,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _pinned(pin: Any) -> str | None:
    if not isinstance(pin, dict):
        return None
    return f"{pin.get('model')}:{pin.get('version')}"
