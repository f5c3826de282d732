"""SQL rows of the job tables turned into the frozen records the job system hands out.

Example::

    with db.transaction() as session:
        job = job_entity(session.get(JobRow, job_id), latest_progress(session, job_id))
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.jobs.entities import Job, JobCheckpoint, JobEvent, JobProgress, JobStatus
from openmaas.store.tables import JobCheckpointRow, JobEventRow, JobRow


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def job_entity(row: JobRow, progress: JobProgress | None = None) -> Job:
    created_at = aware(row.created_at)
    assert created_at is not None
    return Job(
        id=row.id,
        kind=row.kind,
        project=row.project,
        created_by=row.created_by,
        recipe=row.recipe,
        task=row.task,
        base_model=row.base_model,
        training_file=row.training_file,
        validation_file=row.validation_file,
        hyperparameters=dict(row.hyperparameters),
        options=dict(row.options),
        suffix=row.suffix,
        seed=row.seed,
        model_name=row.model_name,
        alias=row.alias,
        status=JobStatus(row.status),
        error=dict(row.error) if row.error else None,
        fine_tuned_model=row.fine_tuned_model,
        metrics=dict(row.metrics),
        trained_tokens=row.trained_tokens,
        cancel_requested=row.cancel_requested,
        attempts=row.attempts,
        worker_id=row.worker_id,
        heartbeat_at=aware(row.heartbeat_at),
        created_at=created_at,
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        progress=progress,
        key_id=row.key_id,
    )


def event_entity(row: JobEventRow) -> JobEvent:
    created_at = aware(row.created_at)
    assert created_at is not None
    return JobEvent(
        id=row.id,
        job_id=row.job_id,
        created_at=created_at,
        level=row.level,
        type=row.type,
        message=row.message,
        data=dict(row.data) if row.data is not None else None,
    )


def checkpoint_entity(row: JobCheckpointRow) -> JobCheckpoint:
    created_at = aware(row.created_at)
    assert created_at is not None
    return JobCheckpoint(
        id=row.id,
        job_id=row.job_id,
        step=row.step,
        epoch=row.epoch,
        metrics=dict(row.metrics),
        location=row.location,
        created_at=created_at,
    )


def latest_progress(session: Session, job_id: str) -> JobProgress | None:
    row = session.scalar(
        select(JobEventRow)
        .where(JobEventRow.job_id == job_id, JobEventRow.type == "metrics")
        .order_by(JobEventRow.id.desc())
        .limit(1)
    )
    if row is None or not row.data:
        return None
    data = dict(row.data)
    finish = data.get("estimated_finish")
    total = data.get("total_steps")
    reserved = {"step", "epoch", "total_steps", "estimated_finish"}
    return JobProgress(
        step=int(data.get("step") or 0),
        epoch=int(data.get("epoch") or 0),
        total_steps=int(total) if isinstance(total, int | float) else None,
        metrics={
            k: float(v)
            for k, v in data.items()
            if k not in reserved and isinstance(v, int | float) and not isinstance(v, bool)
        },
        estimated_finish=(
            datetime.fromtimestamp(finish, UTC) if isinstance(finish, int | float) else None
        ),
    )
