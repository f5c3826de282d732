"""What a kind's `run` gets: the job, its events, checkpoints and the stop check.

Checkpoints go into the artifact store by key (`jobs/<job id>/<checkpoint id>/<file>`),
encrypted when the store encrypts, never through a path under its root, so another store
(object storage) can back them. The newest `KEEP_CHECKPOINTS` are kept; a job that comes
back after its worker stopped restores the newest into its scratch directory.

A run opens the inputs its kind pinned in `prepare` (by id, never by a name that may have
been registered again meanwhile) as the job's project (`job_caller`), not as the server:
what the project can no longer see, the run cannot open.

Example::

    def run(self, context: JobContext) -> JobOutput:
        restored = context.restore_checkpoint(context.scratch / "resume")
        for step in range(restored.checkpoint.step if restored else 0, 100):
            if context.should_stop():
                context.save_checkpoint(context.scratch / "state", step, 1, {})
                raise JobStopped(f"stopped at step {step}")
            context.report_metrics(step + 1, 1, {"loss": 0.1})
        ...
"""

from __future__ import annotations

import math
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope
from openmaas.jobs.entities import Job, JobCheckpoint
from openmaas.jobs.queue import JobQueue, LeaseLost
from openmaas.observability.tracing import add_span_event
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.intake import walk_directory

KEEP_CHECKPOINTS = 3  # per job, newest first; older ones are deleted from the store
CHECKPOINTS_PREFIX = "jobs"  # store keys: jobs/<job id>/<checkpoint id>/<file>
LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}


# A job's option: whether an admin key created it (its run then sees what an admin sees).
CREATED_BY_ADMIN = "created_by_admin"


def job_caller(job: Job) -> Principal:
    """Who a job's run acts as when it opens its inputs: a key of the job's project with the
    training scope (admin when an admin key created the job), never the server itself."""
    admin = bool(job.options.get(CREATED_BY_ADMIN))
    return Principal(
        project=job.project,
        key_id=0,
        prefix=f"job-{job.id}",
        scopes=(Scope.ADMIN,) if admin else (Scope.TRAINING,),
    )


class JobStopped(Exception):
    """Raised by a kind's `run` that stopped because `should_stop()` said so."""


def new_checkpoint_id() -> str:
    return f"ftckpt-{secrets.token_hex(12)}"


def finite(values: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only, and no NaN or infinity (JSON and the registry refuse them)."""
    return {
        name: float(value)
        for name, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


@dataclass(slots=True)
class RunState:
    """What the heartbeat thread and `should_stop` learn about the job being run."""

    job_id: str
    cancel: bool = False
    cancel_seen_at: float | None = None
    lost: bool = False
    checked_at: float = 0.0
    started_at: float = 0.0
    first_step: int = 0
    total_steps: int | None = None


@dataclass(frozen=True, slots=True)
class RestoredCheckpoint:
    checkpoint: JobCheckpoint
    directory: Path  # its files, decrypted, in the job's scratch directory


class JobContext:
    """One run of one job on one worker (built by the worker, handed to `JobKind.run`)."""

    def __init__(
        self,
        *,
        job: Job,
        worker_id: str,
        queue: JobQueue,
        artifacts: ArtifactStore,
        scratch: Path,
        state: RunState,
        should_stop: Callable[[], bool],
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.job = job
        self.worker_id = worker_id
        self.scratch = scratch  # kept across resumes of the job on this machine
        self.device = device
        self.threads = threads  # the worker's torch threads (training_threads); None: all
        self.state = state
        self._queue = queue
        self._artifacts = artifacts
        self._should_stop = should_stop

    def should_stop(self) -> bool:
        """True when the job was cancelled, taken away, or the worker is stopping."""
        return self._should_stop()

    def message(self, text: str, level: str = "info") -> None:
        self._queue.record_event(self.job.id, text, level=LEVELS.get(level, "info"))

    def event(self, text: str, *, type: str, data: Mapping[str, Any]) -> None:
        """An event of the kind's own `type` (a search's trials) with its data."""
        self._queue.record_event(self.job.id, text, type=type, data=data)

    def plan_steps(self, total_steps: int | None) -> None:
        """The run's total steps, for progress and the ETA (the latest value counts)."""
        if total_steps is not None and total_steps >= 1:
            self.state.total_steps = total_steps

    def report_metrics(self, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        state = self.state
        values = finite(metrics)
        data: dict[str, Any] = {"step": step, "epoch": epoch, **values}
        total = state.total_steps
        if total is not None:
            total = max(total, step)
            data["total_steps"] = total
            if step > state.first_step:
                rate = (step - state.first_step) / max(1e-6, time.monotonic() - state.started_at)
                data["estimated_finish"] = int(time.time() + (total - step) / rate)
        # The epoch's figures on the span of the training (observability/tracing.py).
        add_span_event(f"step {step}", {"epoch": epoch, **values})
        shown = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
        of_total = f"/{total}" if total is not None else ""
        self._queue.record_event(
            self.job.id,
            f"Step {step}{of_total} (epoch {epoch}): {shown}",
            type="metrics",
            data=data,
        )

    def save_checkpoint(
        self, directory: Path, step: int, epoch: int, metrics: Mapping[str, float]
    ) -> JobCheckpoint:
        """Store the files of `directory` as the job's newest checkpoint (copied: the
        caller may reuse the directory); `LeaseLost` when the job is no longer ours."""
        checkpoint_id = new_checkpoint_id()
        location = f"{CHECKPOINTS_PREFIX}/{self.job.id}/{checkpoint_id}"
        try:
            for rel, path in sorted(walk_directory(directory).items()):
                self._artifacts.put_file(f"{location}/{rel}", path)
            recorded = self._queue.record_checkpoint(
                self.job.id,
                self.worker_id,
                checkpoint_id=checkpoint_id,
                step=step,
                epoch=epoch,
                metrics=finite(metrics),
                location=location,
            )
        except BaseException as exc:
            self._artifacts.delete_prefix(location)
            if isinstance(exc, LeaseLost):
                self.state.lost = True
            raise
        for old in self._queue.prune_checkpoints(self.job.id, KEEP_CHECKPOINTS):
            self._artifacts.delete_prefix(old)
        return recorded

    def restore_checkpoint(self, target: Path) -> RestoredCheckpoint | None:
        """The newest checkpoint's files, decrypted into `target` (emptied first)."""
        checkpoint = self._queue.latest_checkpoint(self.job.id)
        if checkpoint is None:
            return None
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        prefix = f"{checkpoint.location}/"
        for key in self._artifacts.list_keys(checkpoint.location):
            self._artifacts.fetch_to(key, target / key.removeprefix(prefix))
        self._queue.record_event(
            self.job.id,
            f"Resuming from checkpoint {checkpoint.id} at step {checkpoint.step} "
            f"(epoch {checkpoint.epoch}) on worker {self.worker_id}",
            data={"checkpoint": checkpoint.id, "step": checkpoint.step, "epoch": checkpoint.epoch},
        )
        self.state.first_step = checkpoint.step  # the ETA counts this run's steps only
        return RestoredCheckpoint(checkpoint=checkpoint, directory=target)
