"""The persisted job queue, generic over kinds: record, admit, claim, heartbeat, reclaim,
finish, and each job's events and checkpoints.

Every change is one transaction. A claim takes the oldest queued job atomically: PostgreSQL
skips rows another worker has locked (`FOR UPDATE SKIP LOCKED`); SQLite transactions begin
IMMEDIATE (see `store.database`), so claims from several processes run one at a time.
Changes a worker makes to a running job are fenced by its worker id: once a job has been
reclaimed from a worker that stopped heartbeating, that worker's late writes change nothing
and it learns so (`LeaseLost`).

Example::

    queue = JobQueue(db, heartbeat_timeout_s=60, max_attempts=3)
    job = queue.claim("host:4242:ab12", kinds={"training"})
    if job is not None:
        queue.heartbeat(job.id, "host:4242:ab12")  # every few seconds while training
        queue.succeed(job.id, "host:4242:ab12", fine_tuned_model="sst2-1a2b3c4d", metrics={})
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openmaas.jobs.entities import Job, JobCheckpoint, JobEvent, JobStatus, NewJob, can_move
from openmaas.jobs.records import (
    aware,
    checkpoint_entity,
    event_entity,
    job_entity,
    latest_progress,
    now,
)
from openmaas.observability.tracing import TRACE_CONTEXT_OPTION, inject_context
from openmaas.store.database import Database
from openmaas.store.tables import JobCheckpointRow, JobEventRow, JobRow

logger = logging.getLogger("openmaas.jobs")


class LeaseLost(Exception):
    """The job is no longer this worker's: it was reclaimed after missed heartbeats."""


@dataclass(frozen=True, slots=True)
class Lease:
    """What a worker learns about its job on a heartbeat."""

    held: bool  # still running under this worker
    cancel_requested: bool


class JobQueue:
    """Claims, heartbeats, reclaims and finishes jobs; shared by workers and the API."""

    def __init__(
        self, db: Database, *, heartbeat_timeout_s: float = 60.0, max_attempts: int = 3
    ) -> None:
        self.db = db
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_attempts = max_attempts

    # -- recording and admitting ----------------------------------------------------------------

    def insert(self, new: NewJob, first_event: str) -> Job:
        """Record a prepared job, `validating_files` until `admit` (or `refuse`)."""
        options = dict(new.options)
        carried = inject_context()
        if carried:  # the worker continues the trace of the request that queued the job
            options[TRACE_CONTEXT_OPTION] = carried
        with self.db.transaction() as session:
            row = JobRow(
                id=new.id,
                kind=new.kind,
                project=new.project,
                key_id=new.key_id,
                created_by=new.created_by,
                recipe=new.recipe,
                task=new.task,
                base_model=new.base_model,
                training_file=new.training_file,
                validation_file=new.validation_file,
                hyperparameters=dict(new.hyperparameters),
                options=options,
                suffix=new.suffix,
                seed=new.seed,
                model_name=new.model_name,
                alias=new.alias,
                status=JobStatus.VALIDATING_FILES.value,
                metrics={},
                attempts=0,
                cancel_requested=False,
                created_at=now(),
            )
            session.add(row)
            session.flush()
            self._event(session, row.id, first_event)
            return job_entity(row)

    def admit(
        self,
        job_id: str,
        message: str,
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Job:
        """Queue a job whose inputs passed, with its hyperparameters resolved against them
        (a job cancelled meanwhile stays cancelled)."""
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            assert row is not None
            if row.status != JobStatus.VALIDATING_FILES.value:  # cancelled meanwhile
                return job_entity(row)
            if hyperparameters is not None:
                row.hyperparameters = dict(hyperparameters)
            self._move(row, JobStatus.QUEUED)
            self._event(session, job_id, message, data=data)
            return job_entity(row)

    def refuse(self, job_id: str, message: str, param: str | None) -> None:
        """Fail a job whose inputs did not pass (nothing to do when cancelled meanwhile)."""
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != JobStatus.VALIDATING_FILES.value:
                return
            self._finish(row, JobStatus.FAILED)
            row.error = {"code": "invalid_training_file", "message": message, "param": param}
            self._event(session, job_id, f"File validation failed: {message}", level="error")

    def cancel_row(self, session: Session, row: JobRow, *, who: str) -> Job:
        """Cancel the unfinished job `row` (locked by the caller's transaction): at once when
        it is not running yet; a running one is flagged and its worker stops."""
        if row.status == JobStatus.RUNNING.value:
            if not row.cancel_requested:
                row.cancel_requested = True
                self._event(
                    session,
                    row.id,
                    f"Cancellation requested by {who}; the worker stops at its next step",
                )
            return job_entity(row, latest_progress(session, row.id))
        row.cancel_requested = True
        self._finish(row, JobStatus.CANCELLED)
        self._event(session, row.id, f"Job cancelled by {who} before it started")
        return job_entity(row)

    # -- claiming ---------------------------------------------------------------------------

    def claim(self, worker_id: str, kinds: Collection[str] | None = None) -> Job | None:
        """Take the oldest queued job for `worker_id` (None when the queue is empty), only
        of `kinds` when given: a worker claims only what it can run."""
        with self.db.transaction() as session:
            query = select(JobRow).where(
                JobRow.status == JobStatus.QUEUED.value, JobRow.cancel_requested.is_(False)
            )
            if kinds is not None:
                query = query.where(JobRow.kind.in_(sorted(kinds)))
            row = session.scalar(
                query.order_by(JobRow.created_at, JobRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return None
            moment = now()
            self._move(row, JobStatus.RUNNING)
            row.worker_id = worker_id
            row.heartbeat_at = moment
            if row.started_at is None:
                row.started_at = moment
            self._event(session, row.id, f"Job started on worker {worker_id}")
            return job_entity(row)

    def heartbeat(self, job_id: str, worker_id: str) -> Lease:
        """Record that `worker_id` is alive and still running `job_id`; learn of a cancel."""
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or not self._holds(row, worker_id):
                return Lease(held=False, cancel_requested=bool(row and row.cancel_requested))
            row.heartbeat_at = now()
            return Lease(held=True, cancel_requested=row.cancel_requested)

    def lease(self, job_id: str, worker_id: str) -> Lease:
        """Like `heartbeat` without writing: whether the job is still ours, and cancelled."""
        with self.db.transaction() as session:
            found = session.execute(
                select(JobRow.status, JobRow.worker_id, JobRow.cancel_requested).where(
                    JobRow.id == job_id
                )
            ).one_or_none()
        if found is None:
            return Lease(held=False, cancel_requested=False)
        status, owner, cancel = found
        return Lease(
            held=status == JobStatus.RUNNING.value and owner == worker_id, cancel_requested=cancel
        )

    # -- reclaiming jobs of workers that stopped -----------------------------------------------

    def reclaim_stale(self) -> list[str]:
        """Requeue (or fail, after `max_attempts` lost runs) running jobs whose worker has not
        heartbeaten for `heartbeat_timeout_s`; returns their ids."""
        cutoff = now() - timedelta(seconds=self.heartbeat_timeout_s)
        reclaimed = []
        with self.db.transaction() as session:
            rows = session.scalars(
                select(JobRow)
                .where(JobRow.status == JobStatus.RUNNING.value, JobRow.heartbeat_at < cutoff)
                .order_by(JobRow.created_at)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                beat = aware(row.heartbeat_at)
                silent_s = (now() - beat).total_seconds() if beat else float("inf")
                reason = (
                    f"worker {row.worker_id} stopped heartbeating ({silent_s:.0f} s without a "
                    f"heartbeat; the limit is {self.heartbeat_timeout_s:g} s)"
                )
                self._take_back(session, row, reason, count_attempt=True)
                reclaimed.append(row.id)
        return reclaimed

    def reclaim_worker(
        self, worker_id: str, reason: str, *, count_attempt: bool = True
    ) -> list[str]:
        """Take back every job `worker_id` is running, at once (its supervisor saw it exit)."""
        reclaimed = []
        with self.db.transaction() as session:
            rows = session.scalars(
                select(JobRow)
                .where(JobRow.status == JobStatus.RUNNING.value, JobRow.worker_id == worker_id)
                .with_for_update()
            ).all()
            for row in rows:
                self._take_back(session, row, reason, count_attempt=count_attempt)
                reclaimed.append(row.id)
        return reclaimed

    def release(self, job_id: str, worker_id: str, reason: str) -> bool:
        """A worker that is stopping hands its job back to the queue (no attempt counted)."""
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or not self._holds(row, worker_id):
                return False
            self._take_back(session, row, reason, count_attempt=False)
            return True

    def _take_back(
        self, session: Session, row: JobRow, reason: str, *, count_attempt: bool
    ) -> None:
        checkpoint = self._latest_checkpoint(session, row.id)
        if row.cancel_requested:
            self._finish(row, JobStatus.CANCELLED)
            self._event(session, row.id, f"{reason}; the job was being cancelled: cancelled")
            return
        if count_attempt:
            row.attempts += 1
        if count_attempt and row.attempts >= self.max_attempts:
            message = (
                f"{reason}; the job lost its worker {row.attempts} times "
                f"(at most {self.max_attempts} allowed) and is not retried"
            )
            self._finish(row, JobStatus.FAILED)
            row.error = {"code": "worker_lost", "message": message, "param": None}
            self._event(session, row.id, message, level="error")
            return
        self._move(row, JobStatus.QUEUED)
        row.worker_id = None
        row.heartbeat_at = None
        where = (
            f"from checkpoint {checkpoint.id} (step {checkpoint.step}, epoch {checkpoint.epoch})"
            if checkpoint is not None
            else "from the start (no checkpoint yet)"
        )
        runs = f"; lost runs: {row.attempts} of {self.max_attempts}" if count_attempt else ""
        self._event(
            session, row.id, f"{reason}; job requeued, will resume {where}{runs}", level="warn"
        )

    # -- progress ------------------------------------------------------------------------------

    def record_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: Mapping[str, Any] | None = None,
    ) -> JobEvent:
        with self.db.transaction() as session:
            return event_entity(
                self._event(session, job_id, message, level=level, type=type, data=data)
            )

    def record_checkpoint(
        self,
        job_id: str,
        worker_id: str,
        *,
        checkpoint_id: str,
        step: int,
        epoch: int,
        metrics: Mapping[str, float],
        location: str,
    ) -> JobCheckpoint:
        """Record a checkpoint whose files are stored at `location`; `LeaseLost` when the job
        is no longer this worker's (the caller then removes the files)."""
        with self.db.transaction() as session:
            job = session.get(JobRow, job_id, with_for_update=True)
            if job is None or not self._holds(job, worker_id):
                raise LeaseLost(f"job {job_id} is no longer run by worker {worker_id}")
            row = JobCheckpointRow(
                id=checkpoint_id,
                job_id=job_id,
                step=step,
                epoch=epoch,
                metrics={k: float(v) for k, v in metrics.items()},
                location=location,
                created_at=now(),
            )
            session.add(row)
            job.heartbeat_at = now()
            self._event(
                session,
                job_id,
                f"Checkpoint {checkpoint_id} saved at step {step} (epoch {epoch})",
                data={"checkpoint": checkpoint_id, "step": step, "epoch": epoch},
            )
            session.flush()
            return checkpoint_entity(row)

    def latest_checkpoint(self, job_id: str) -> JobCheckpoint | None:
        with self.db.transaction() as session:
            return self._latest_checkpoint(session, job_id)

    def prune_checkpoints(self, job_id: str, keep: int) -> list[str]:
        """Forget all but the newest `keep` checkpoints; returns the locations to delete."""
        with self.db.transaction() as session:
            rows = session.scalars(
                select(JobCheckpointRow)
                .where(JobCheckpointRow.job_id == job_id)
                .order_by(JobCheckpointRow.created_at.desc(), JobCheckpointRow.id.desc())
                .offset(keep)
            ).all()
            if rows:
                session.execute(
                    delete(JobCheckpointRow).where(JobCheckpointRow.id.in_([r.id for r in rows]))
                )
            return [row.location for row in rows]

    # -- finishing -----------------------------------------------------------------------------

    def succeed(
        self,
        job_id: str,
        worker_id: str,
        *,
        fine_tuned_model: str | None,
        metrics: Mapping[str, float],
        trained_tokens: int | None = None,
        message: str | None = None,
    ) -> Job:
        """Finish a job that succeeded: it registered `fine_tuned_model`, or (a kind that
        registers nothing) did what `message` says."""
        with self.db.transaction() as session:
            row = self._owned(session, job_id, worker_id)
            self._finish(row, JobStatus.SUCCEEDED)
            row.fine_tuned_model = fine_tuned_model
            row.metrics = {k: float(v) for k, v in metrics.items()}
            row.trained_tokens = trained_tokens
            said = message or f"registered {fine_tuned_model}"
            self._event(
                session,
                job_id,
                f"Job succeeded: {said}",
                data={"fine_tuned_model": fine_tuned_model, "metrics": dict(row.metrics)},
            )
            return job_entity(row)

    def fail(self, job_id: str, worker_id: str, *, code: str, message: str) -> Job:
        with self.db.transaction() as session:
            row = self._owned(session, job_id, worker_id)
            self._finish(row, JobStatus.FAILED)
            row.error = {"code": code, "message": message, "param": None}
            self._event(session, job_id, f"Job failed: {message}", level="error")
            return job_entity(row)

    def finish_cancelled(self, job_id: str, worker_id: str, message: str) -> Job:
        with self.db.transaction() as session:
            row = self._owned(session, job_id, worker_id)
            self._finish(row, JobStatus.CANCELLED)
            self._event(session, job_id, message)
            return job_entity(row)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _holds(row: JobRow, worker_id: str) -> bool:
        return row.status == JobStatus.RUNNING.value and row.worker_id == worker_id

    def _owned(self, session: Session, job_id: str, worker_id: str) -> JobRow:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None or not self._holds(row, worker_id):
            raise LeaseLost(f"job {job_id} is no longer run by worker {worker_id}")
        return row

    @staticmethod
    def _move(row: JobRow, status: JobStatus) -> None:
        before = JobStatus(row.status)
        if not can_move(before, status):
            raise AssertionError(f"job {row.id}: no transition {before} -> {status}")
        row.status = status.value

    def _finish(self, row: JobRow, status: JobStatus) -> None:
        self._move(row, status)
        row.finished_at = now()
        row.heartbeat_at = None

    @staticmethod
    def _latest_checkpoint(session: Session, job_id: str) -> JobCheckpoint | None:
        row = session.scalar(
            select(JobCheckpointRow)
            .where(JobCheckpointRow.job_id == job_id)
            .order_by(JobCheckpointRow.created_at.desc(), JobCheckpointRow.id.desc())
            .limit(1)
        )
        return checkpoint_entity(row) if row is not None else None

    @staticmethod
    def _event(
        session: Session,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: Mapping[str, Any] | None = None,
    ) -> JobEventRow:
        row = JobEventRow(
            job_id=job_id,
            created_at=now(),
            level=level,
            type=type,
            message=message,
            data=dict(data) if data is not None else None,
        )
        session.add(row)
        session.flush()
        return row
