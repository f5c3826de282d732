"""The API side of jobs, generic over kinds: create, list, get, events, checkpoints, cancel.

Every entry point takes the caller explicitly and refuses a missing one (`MissingCaller`);
jobs belong to the caller's project (admins see all), and another project's job answers
exactly like a missing one. Creating is two steps so the caller can charge quotas between
them: `prepare` (the kind's checks, nothing written) and `submit` (recorded, the inputs read
while the job is `validating_files`, then queued).

Example::

    jobs = JobService(db, kinds=[TrainingJobKind(db, registry=..., datasets=..., recipes=...)])
    job = jobs.create("training", JobRequest(training_file="file-1a2b", recipe="textcnn"),
                      caller=caller)
    jobs.cancel(job.id, caller=caller)
    page = jobs.events(job.id, caller=caller, limit=20)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal, TypeAlias

from sqlalchemy import and_, or_, select

from openmaas.auth.access import is_admin, require_caller
from openmaas.auth.entities import Principal
from openmaas.errors import Conflict, InvalidRequest, NotFound, OpenMaaSError
from openmaas.jobs.entities import (
    FINISHED,
    TRAINING,
    Job,
    JobCheckpoint,
    JobEvent,
    JobStatus,
    NewJob,
    Page,
)
from openmaas.jobs.kinds import JobKind, JobKinds
from openmaas.jobs.queue import JobQueue
from openmaas.jobs.records import checkpoint_entity, event_entity, job_entity, latest_progress
from openmaas.store.database import Database
from openmaas.store.tables import JobCheckpointRow, JobEventRow, JobRow

logger = logging.getLogger("openmaas.jobs")

MAX_PAGE = 100

# A kind, or kinds one route serves together (training and search jobs), or any (None).
KindFilter: TypeAlias = str | tuple[str, ...] | None


def _job_not_found(job_id: str, kinds: KindFilter) -> NotFound:
    kind = kinds[0] if isinstance(kinds, tuple) else kinds
    if kind in (None, TRAINING):
        return NotFound(
            f"fine-tuning job {job_id!r} not found",
            param="fine_tuning_job_id",
            code="job_not_found",
        )
    return NotFound(f"{kind} {job_id!r} not found", param=f"{kind}_id", code=f"{kind}_not_found")


class JobService:
    """Jobs of the caller's project (admins see all), of every kind it knows."""

    def __init__(
        self,
        db: Database,
        *,
        kinds: Iterable[JobKind],
        heartbeat_timeout_s: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        self.db = db
        self.kinds = kinds if isinstance(kinds, JobKinds) else JobKinds(kinds)
        self.queue = JobQueue(
            db, heartbeat_timeout_s=heartbeat_timeout_s, max_attempts=max_attempts
        )

    def kind(self, name: str) -> JobKind:
        return self.kinds.get(name)

    # -- creating ------------------------------------------------------------------------------

    def create(self, kind: str, request: Any, *, caller: Principal) -> Job:
        """Validate, record and queue a job (`prepare` then `submit`)."""
        return self.submit(self.prepare(kind, request, caller=caller), caller=caller)

    def prepare(self, kind: str, request: Any, *, caller: Principal) -> NewJob:
        """The kind's checks that need no input contents; 400 naming the problem. Nothing
        is written: the caller charges quotas between this and `submit`."""
        require_caller(caller)
        return self.kinds.get(kind).prepare(request, caller=caller)

    def submit(self, prepared: NewJob, *, caller: Principal, refuse: bool = True) -> Job:
        """Record the job, have its kind read its inputs and queue it. Inputs that cannot be
        used fail the job and raise 400, or with `refuse=False` leave it failed and return
        it (OpenAI's batches report a bad input file on the batch itself)."""
        require_caller(caller)
        kind = self.kinds.get(prepared.kind)
        job = self.queue.insert(prepared, kind.checking_message(prepared))
        try:
            admission = kind.check_inputs(job)
        except Exception as exc:
            if isinstance(exc, OpenMaaSError):
                message, param = exc.message, exc.param
            else:
                logger.exception("job %s: its files could not be read", job.id)
                message, param = "the files could not be read (see the server log)", None
            self.queue.refuse(job.id, message, param)
            caller_error = isinstance(exc, OpenMaaSError) and 400 <= exc.status_code < 500
            if caller_error and not refuse:
                return self.get(job.id, caller=caller)
            if caller_error:
                raise InvalidRequest(
                    f"{message} (job {job.id} failed)", param=param, code="invalid_training_file"
                ) from exc
            raise
        return self.queue.admit(
            job.id,
            admission.message,
            hyperparameters=admission.hyperparameters,
            data=admission.data,
        )

    # -- reading -------------------------------------------------------------------------------

    def get(self, job_id: str, *, caller: Principal, kind: KindFilter = None) -> Job:
        """A job of the caller's project (of `kind` when given: a job of another kind
        answers like a missing one)."""
        require_caller(caller)
        with self.db.transaction() as session:
            row = self._visible(session, job_id, caller, kind=kind)
            progress = latest_progress(session, job_id) if row.status == "running" else None
            return job_entity(row, progress)

    def list(
        self,
        *,
        caller: Principal,
        after: str | None = None,
        limit: int = 20,
        kind: KindFilter = None,
        base_model: str | None = None,
    ) -> Page[Job]:
        """Newest first (of `kind` only when given, and of jobs whose `base_model` is
        `base_model` when given); `after` is the last job id of the previous page."""
        require_caller(caller)
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.transaction() as session:
            query = select(JobRow)
            if not is_admin(caller):
                query = query.where(JobRow.project == caller.project)
            if kind is not None:
                query = query.where(JobRow.kind.in_(_kinds(kind)))
            if base_model is not None:
                query = query.where(JobRow.base_model == base_model)
            if after is not None:
                cursor = self._visible(session, after, caller, kind=kind)
                query = query.where(
                    or_(
                        JobRow.created_at < cursor.created_at,
                        and_(JobRow.created_at == cursor.created_at, JobRow.id < cursor.id),
                    )
                )
            rows = session.scalars(
                query.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit + 1)
            ).all()
            jobs = [
                job_entity(
                    row, latest_progress(session, row.id) if row.status == "running" else None
                )
                for row in rows[:limit]
            ]
            return Page(jobs, has_more=len(rows) > limit)

    def events(
        self,
        job_id: str,
        *,
        caller: Principal,
        after: int | None = None,
        limit: int = 20,
        order: Literal["desc", "asc"] = "desc",
        kind: KindFilter = None,
        type: str | None = None,
    ) -> Page[JobEvent]:
        """A job's events, newest first as OpenAI lists them (or oldest first for followers);
        `after` is the last event id of the previous page; of `type` only when given."""
        require_caller(caller)
        limit = max(1, min(limit, 1000))
        with self.db.transaction() as session:
            self._visible(session, job_id, caller, kind=kind)
            query = select(JobEventRow).where(JobEventRow.job_id == job_id)
            if type is not None:
                query = query.where(JobEventRow.type == type)
            if order == "desc":
                if after is not None:
                    query = query.where(JobEventRow.id < after)
                query = query.order_by(JobEventRow.id.desc())
            else:
                if after is not None:
                    query = query.where(JobEventRow.id > after)
                query = query.order_by(JobEventRow.id)
            rows = session.scalars(query.limit(limit + 1)).all()
            return Page([event_entity(row) for row in rows[:limit]], has_more=len(rows) > limit)

    def checkpoints(
        self,
        job_id: str,
        *,
        caller: Principal,
        after: str | None = None,
        limit: int = 10,
        kind: KindFilter = None,
    ) -> Page[JobCheckpoint]:
        """A job's checkpoints, newest first; `after` is the last id of the previous page."""
        require_caller(caller)
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.transaction() as session:
            self._visible(session, job_id, caller, kind=kind)
            query = select(JobCheckpointRow).where(JobCheckpointRow.job_id == job_id)
            if after is not None:
                cursor = session.get(JobCheckpointRow, after)
                if cursor is None or cursor.job_id != job_id:
                    raise NotFound(f"checkpoint {after!r} not found", param="after")
                query = query.where(
                    or_(
                        JobCheckpointRow.created_at < cursor.created_at,
                        and_(
                            JobCheckpointRow.created_at == cursor.created_at,
                            JobCheckpointRow.id < cursor.id,
                        ),
                    )
                )
            rows = session.scalars(
                query.order_by(
                    JobCheckpointRow.created_at.desc(), JobCheckpointRow.id.desc()
                ).limit(limit + 1)
            ).all()
            return Page(
                [checkpoint_entity(row) for row in rows[:limit]], has_more=len(rows) > limit
            )

    # -- cancelling ----------------------------------------------------------------------------

    def cancel(self, job_id: str, *, caller: Principal, kind: KindFilter = None) -> Job:
        """A job not running yet is cancelled at once; a running one is asked to stop (its
        worker stops within seconds, keeping its last checkpoint)."""
        require_caller(caller)
        with self.db.transaction() as session:
            row = self._visible(session, job_id, caller, lock=True, kind=kind)
            status = JobStatus(row.status)
            if status is JobStatus.CANCELLED:
                return job_entity(row)
            if status in FINISHED:
                what, param = (
                    ("fine-tuning job", "fine_tuning_job_id")
                    if row.kind == TRAINING
                    else (row.kind, f"{row.kind}_id")
                )
                raise Conflict(
                    f"{what} {job_id} has already {status.value}; nothing to cancel",
                    param=param,
                    code="job_finished",
                )
            return self.queue.cancel_row(session, row, who=caller.actor)

    @staticmethod
    def _visible(
        session: Any,
        job_id: str,
        caller: Principal,
        *,
        lock: bool = False,
        kind: KindFilter = None,
    ) -> JobRow:
        row: JobRow | None = session.get(JobRow, job_id, with_for_update=lock)
        # Another project's job, or one of another kind, answers exactly like a missing one.
        if (
            row is None
            or not (is_admin(caller) or row.project == caller.project)
            or (kind is not None and row.kind not in _kinds(kind))
        ):
            raise _job_not_found(job_id, kind)
        return row


def _kinds(kind: str | tuple[str, ...]) -> tuple[str, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
