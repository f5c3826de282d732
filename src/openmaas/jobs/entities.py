"""What the job system hands out: frozen records, independent of the SQL rows behind them.

Example::

    job = jobs.get("ftjob-1a2b", caller=principal)
    if job.status.finished:
        print(job.kind, job.status, job.metrics)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# The kind of every job recorded before kinds existed.
TRAINING = "training"
# A hyperparameter search: trainings of one recipe, the best registered (`training.search_kind`).
SEARCH = "search"


class JobStatus(StrEnum):
    """validating_files → queued → running → succeeded | failed | cancelled.

    A running job goes back to queued when its worker stops (gracefully, or found dead by a
    missed heartbeat) and resumes from its last checkpoint on the next worker.
    """

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# Every allowed move of the state machine; anything else is a bug (or a lost race, which the
# conditional updates turn into "nothing changed").
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.VALIDATING_FILES: frozenset(
        {JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_move(before: JobStatus, after: JobStatus) -> bool:
    return after in TRANSITIONS[before]


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Where a running job is, from its latest metrics event."""

    step: int
    epoch: int
    total_steps: int | None
    metrics: Mapping[str, float]
    estimated_finish: datetime | None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job a kind has prepared (validated, inputs pinned) and nobody has recorded yet: the
    caller charges quotas between `JobService.prepare` and `JobService.submit`."""

    id: str
    kind: str
    project: str
    key_id: int | None
    created_by: str
    recipe: str
    task: str
    base_model: str | None
    training_file: str
    validation_file: str | None
    hyperparameters: Mapping[str, Any]  # as given; the kind resolves them against its inputs
    options: Mapping[str, Any]
    suffix: str | None
    seed: int
    model_name: str
    alias: str | None


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str  # which JobKind prepares and runs it ("training")
    project: str
    created_by: str
    recipe: str
    task: str
    base_model: str | None  # the reference as given, e.g. "all-minilm-l6-v2"
    training_file: str
    validation_file: str | None
    hyperparameters: Mapping[str, Any]  # the recipe's, resolved
    options: Mapping[str, Any]  # what was asked (OpenAI model/method, splits, requested)
    suffix: str | None
    seed: int
    model_name: str  # the version is registered under this name
    alias: str | None
    status: JobStatus
    error: Mapping[str, Any] | None  # {"code", "message", "param"}
    fine_tuned_model: str | None
    metrics: Mapping[str, float]  # on the test split, once succeeded
    trained_tokens: int | None
    cancel_requested: bool
    attempts: int  # runs lost to a worker that stopped heartbeating
    worker_id: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: JobProgress | None = None
    key_id: int | None = None  # the API key that created it (None: none, or before keys)

    @property
    def openai_model(self) -> str:
        """What OpenAI calls the job's `model`: what the caller asked to fine-tune."""
        return str(self.options.get("model") or self.base_model or self.recipe)


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: int
    job_id: str
    created_at: datetime
    level: str  # info | warn | error
    type: str  # message | metrics
    message: str
    data: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class JobCheckpoint:
    id: str  # ftckpt-<hex>
    job_id: str
    step: int
    epoch: int
    metrics: Mapping[str, float]
    location: str  # the key prefix of its files in the artifact store
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a newest-first (or oldest-first) listing and whether more follow."""

    items: list[T] = field(default_factory=list)
    has_more: bool = False
