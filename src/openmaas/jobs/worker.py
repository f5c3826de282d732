"""A job worker process: claim a job of a kind it runs, run it, publish the result.

Run by the supervisor (`openmaas serve`, `openmaas worker`) as
`python -m openmaas.jobs.worker --token <hex>`; it reads the same `OPENMAAS_*` settings.
While a job runs a thread heartbeats; `should_stop` tells the kind to stop when the job is
cancelled, when the worker is asked to stop (SIGTERM/SIGINT: finish the step, checkpoint,
hand the job back to the queue), when its parent died, or when the job was taken from it
after missed heartbeats. Checkpoints go through the artifact store (`jobs.context`); a job
that comes back resumes from its newest one.

Example::

    worker = Worker.from_settings(Settings(), worker_id=worker_identity(os.getpid(), "ab12"))
    worker.run()  # until stop() (or a signal, when installed by main())
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType

from sqlalchemy.exc import SQLAlchemyError

from openmaas.errors import OpenMaaSError
from openmaas.jobs.context import JobContext, JobStopped, RunState, finite
from openmaas.jobs.entities import Job
from openmaas.jobs.failures import public_message
from openmaas.jobs.kinds import JobKind, JobKinds
from openmaas.jobs.publish import JobResult, publish
from openmaas.jobs.queue import JobQueue, LeaseLost
from openmaas.observability.tracing import (
    TRACE_CONTEXT_OPTION,
    child_span,
    configure_tracing,
    continued_span,
    mark_failed,
)
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.composition import Registry
from openmaas.settings import Settings
from openmaas.store.database import Database

logger = logging.getLogger("openmaas.jobs.worker")

IDLE_POLL_S = 1.0  # an idle worker looks for queued jobs this often (a database has no push)
STOP_CHECK_S = 0.5  # `should_stop` reads the job's cancel flag at most this often
# A cancelled job whose kind does not stop within this time: the worker process exits
# (its supervisor starts another) rather than keep a cancelled job's resources busy.
CANCEL_GRACE_S = 30.0
# Scratch space per job under OPENMAAS_HOME, where training jobs have always kept theirs.
SCRATCH_DIR = Path("training") / "jobs"


def worker_identity(pid: int, token: str) -> str:
    """`host:pid:token`: unique, and says where to look for the process."""
    return f"{socket.gethostname()}:{pid}:{token}"


class StopSignal:
    """A stop request that signal handlers and threads may raise and a loop may wait on
    (a pipe, so a signal wakes the wait; `threading.Event.set` is not safe in a handler)."""

    def __init__(self) -> None:
        self.requested = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        self.requested = True
        self.wake()

    def wake(self) -> None:
        """End the current `wait` without asking to stop."""
        # A full pipe is already a wake-up; a closed one means nobody waits any more.
        with contextlib.suppress(OSError):
            os.write(self._write, b"\0")

    def handle(self, signum: int, frame: FrameType | None) -> None:
        logger.info("signal %s: stopping after the current step", signal.Signals(signum).name)
        self.set()

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handle)

    def wait(self, timeout_s: float | None) -> bool:
        """True once a stop was requested; otherwise after `timeout_s` False."""
        if not self.requested:
            ready, _, _ = select.select([self._read], [], [], timeout_s)
            if ready:
                # Drained, so the next wait waits (the pipe holds at most a few wake-ups).
                with contextlib.suppress(OSError):
                    os.read(self._read, 4096)
        return self.requested

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


class Worker:
    """Claims and runs jobs of its kinds one at a time until stopped."""

    def __init__(
        self,
        *,
        worker_id: str,
        queue: JobQueue,
        kinds: Iterable[JobKind],
        registry: Registry,
        home: Path,
        heartbeat_s: float,
        device: str = "cpu",
        threads: int | None = None,
        parent_pid: int | None = None,
        stop: StopSignal | None = None,
        in_process: bool = False,
    ) -> None:
        self.worker_id = worker_id
        self.queue = queue
        self.kinds = kinds if isinstance(kinds, JobKinds) else JobKinds(kinds)
        self.registry = registry
        self.artifacts: ArtifactStore = registry.artifacts
        self.scratch_root = home / SCRATCH_DIR
        self.heartbeat_s = heartbeat_s
        self.device = device
        self.threads = threads  # torch intra-op threads for jobs; None: torch's default
        self.parent_pid = parent_pid
        self.stop_signal = stop or StopSignal()
        # A worker thread inside the server (batches): it shares the server's database and
        # never ends the process, whatever a job does.
        self.in_process = in_process
        self._state: RunState | None = None
        self._reclaimed_at = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, worker_id: str, parent_pid: int | None = None
    ) -> Worker:
        from openmaas.datasets.service import DatasetService
        from openmaas.evaluation.gate import AliasGate
        from openmaas.evaluation.kind import EvaluationJobKind
        from openmaas.jobs.service import JobService
        from openmaas.metering.audit import AuditLog
        from openmaas.optimize.auto_onnx import AutoOnnx
        from openmaas.optimize.kind import OptimizationJobKind
        from openmaas.training.kind import TrainingJobKind
        from openmaas.training.requests import load_recipes
        from openmaas.training.search_kind import SearchJobKind
        from openmaas.wiring import build_artifact_store, build_registry

        db = Database(settings.database_url)
        db.migrate()
        artifacts = build_artifact_store(settings)
        artifacts.start()
        # What a job registers is always in a safe format.
        registry = build_registry(settings, db=db, artifacts=artifacts, allow_pickle=False)
        datasets = DatasetService(db, artifacts)
        # A job's `alias` under an evaluation gate is judged here, as the server would.
        registry.aliases.gate = AliasGate(
            registry,
            datasets,
            max_examples=settings.max_eval_examples,
            threads=settings.training_threads,
        )
        training = TrainingJobKind(
            db,
            registry=registry,
            datasets=datasets,
            recipes=load_recipes(settings.extra_recipes),
            ray_address=settings.ray_address,
        )
        evaluation = EvaluationJobKind(
            registry=registry, datasets=datasets, max_examples=settings.max_eval_examples
        )
        optimization = OptimizationJobKind(registry=registry, db=db, datasets=datasets)
        # What a job registers (a trained encoder) gets its ONNX variant, as an upload does.
        AutoOnnx.install(
            settings,
            registry,
            JobService(
                db,
                kinds=[optimization],
                heartbeat_timeout_s=settings.job_heartbeat_timeout_s,
                max_attempts=settings.job_max_attempts,
            ),
            AuditLog(db),
        )
        return cls(
            worker_id=worker_id,
            queue=JobQueue(
                db,
                heartbeat_timeout_s=settings.job_heartbeat_timeout_s,
                max_attempts=settings.job_max_attempts,
            ),
            kinds=[
                training,
                SearchJobKind(training),
                optimization,
                evaluation,
            ],
            registry=registry,
            home=settings.home,
            heartbeat_s=settings.job_heartbeat_s,
            device=settings.device,
            threads=settings.training_threads,
            parent_pid=parent_pid,
        )

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        logger.info(
            "worker %s ready (kinds: %s)", self.worker_id, ", ".join(sorted(self.kinds.names))
        )
        while not self.stop_signal.requested:
            if self._parent_gone():
                self.stop_signal.set()
                break
            try:
                job = self._next_job()
            except SQLAlchemyError:
                logger.exception("worker %s: the database is unavailable; retrying", self.worker_id)
                job = None
            if job is None:
                self.stop_signal.wait(IDLE_POLL_S)
                continue
            self.run_job(job)
        logger.info("worker %s stopped", self.worker_id)

    def stop(self) -> None:
        self.stop_signal.set()

    def wake(self) -> None:
        """Look for queued jobs now rather than at the next poll (a job was just queued)."""
        self.stop_signal.wake()

    def close(self) -> None:
        self.stop_signal.close()
        if not self.in_process:
            self.queue.db.close()

    def _next_job(self) -> Job | None:
        # Reclaiming is cheap but takes the write lock: every worker does it now and then.
        if time.monotonic() - self._reclaimed_at >= min(10.0, self.queue.heartbeat_timeout_s / 2):
            self._reclaimed_at = time.monotonic()
            for job_id in self.queue.reclaim_stale():
                logger.warning("job %s: its worker stopped heartbeating; requeued", job_id)
        return self.queue.claim(self.worker_id, self.kinds.names)

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    # -- one job -------------------------------------------------------------------------------

    def run_job(self, job: Job) -> None:
        logger.info("worker %s: running job %s (%s)", self.worker_id, job.id, job.kind)
        state = RunState(job_id=job.id, started_at=time.monotonic())
        self._state = state
        beat_stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(state, beat_stop), name=f"heartbeat-{job.id}", daemon=True
        )
        beat.start()
        if self.threads is not None:
            # After the heartbeats start: torch's first import takes seconds on a busy machine.
            import torch  # here, not at the top: a worker with no job imports no torch

            torch.set_num_threads(self.threads)
        failure_code = "job_failed"
        attributes = {"openmaas.job.id": job.id, "openmaas.job.kind": job.kind}
        carried = job.options.get(TRACE_CONTEXT_OPTION)
        with continued_span(
            "openmaas.job", carried if isinstance(carried, dict) else None, attributes
        ):
            try:
                kind = self._kind(job)
                failure_code = kind.failure_code
                self._run_and_publish(kind, job, state)
            except LeaseLost:
                logger.warning(
                    "job %s was taken from worker %s; dropping it", job.id, self.worker_id
                )
            except Exception as exc:  # never let one job take the worker down
                self._fail(job, failure_code, exc)
            finally:
                beat_stop.set()
                beat.join()
                self._state = None

    def _kind(self, job: Job) -> JobKind:
        if job.kind not in self.kinds.names:
            raise OpenMaaSError(
                f"job kind {job.kind!r} is not installed on worker {self.worker_id} "
                f"(it has: {', '.join(sorted(self.kinds.names))})"
            )
        return self.kinds.get(job.kind)

    def _run_and_publish(self, kind: JobKind, job: Job, state: RunState) -> None:
        scratch = self.scratch_root / job.id
        scratch.mkdir(parents=True, exist_ok=True)
        context = JobContext(
            job=job,
            worker_id=self.worker_id,
            queue=self.queue,
            artifacts=self.artifacts,
            scratch=scratch,
            state=state,
            should_stop=self._should_stop,
            device=self.device,
            threads=self.threads,
        )
        try:
            output = kind.run(context)
        except JobStopped:
            self._stopped(job, state, scratch)
            return
        # Finished: a stop request no longer matters (registering is quick), a cancel does.
        lease = self.queue.lease(job.id, self.worker_id)
        if not lease.held:
            raise LeaseLost(job.id)
        if lease.cancel_requested:
            state.cancel = True
            self._stopped(job, state, scratch)
            return
        if isinstance(output, JobResult):
            self.queue.succeed(
                job.id,
                self.worker_id,
                fine_tuned_model=None,
                metrics=finite(output.metrics),
                message=output.message,
            )
            logger.info("job %s succeeded: %s", job.id, output.message)
            shutil.rmtree(scratch, ignore_errors=True)
            return
        try:
            with child_span("openmaas.job.register"):
                name, note = publish(self.registry, job, output)
        except Exception as exc:
            self._fail(job, "registration_failed", exc)
            return
        self.queue.succeed(
            job.id,
            self.worker_id,
            fine_tuned_model=name,
            metrics=finite(output.metrics),
            trained_tokens=output.trained_tokens,
            message=note,
        )
        logger.info("job %s succeeded: %s", job.id, name)
        shutil.rmtree(scratch, ignore_errors=True)

    def _stopped(self, job: Job, state: RunState, scratch: Path) -> None:
        if state.lost:
            raise LeaseLost(job.id)
        checkpoint = self.queue.latest_checkpoint(job.id)
        kept = (
            f"; checkpoint {checkpoint.id} (step {checkpoint.step}) is kept" if checkpoint else ""
        )
        if state.cancel:
            self.queue.finish_cancelled(job.id, self.worker_id, f"Job cancelled{kept}")
            shutil.rmtree(scratch, ignore_errors=True)
        elif self.stop_signal.requested:
            self.queue.release(
                job.id,
                self.worker_id,
                f"worker {self.worker_id} is stopping; it handed the job back{kept}",
            )
        else:
            raise OpenMaaSError("the job stopped (JobStopped) although nobody asked it to")

    def _fail(self, job: Job, code: str, exc: BaseException) -> None:
        state = self._state
        if state is not None and state.lost:
            return  # the job is someone else's now
        # The traceback goes to this worker's log only: the job's error and events are read
        # by the tenant, who gets one clear line without the server's paths.
        logger.error("job %s failed (%s)", job.id, code, exc_info=exc)
        mark_failed(exc, code)
        message = public_message(exc)
        with contextlib.suppress(LeaseLost):
            self.queue.fail(job.id, self.worker_id, code=code, message=message)
        shutil.rmtree(self.scratch_root / job.id, ignore_errors=True)

    # -- stopping ------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        state = self._state
        if state is None:
            return True
        if self.stop_signal.requested or state.lost or state.cancel:
            return True
        moment = time.monotonic()
        if moment - state.checked_at >= STOP_CHECK_S:
            state.checked_at = moment
            try:
                lease = self.queue.lease(state.job_id, self.worker_id)
            except SQLAlchemyError:
                logger.exception("job %s: could not read its cancel flag", state.job_id)
                return False
            state.lost = not lease.held
            if lease.cancel_requested and not state.cancel:
                state.cancel, state.cancel_seen_at = True, moment
        return state.cancel or state.lost

    # -- heartbeats ----------------------------------------------------------------------------

    def _heartbeat(self, state: RunState, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            if self._parent_gone():
                logger.warning("worker %s: its supervisor is gone; stopping", self.worker_id)
                self.stop_signal.set()
            try:
                lease = self.queue.heartbeat(state.job_id, self.worker_id)
            except SQLAlchemyError:
                logger.exception("job %s: heartbeat not written", state.job_id)
                continue
            if not lease.held:
                state.lost = True
            if lease.cancel_requested and not state.cancel:
                state.cancel, state.cancel_seen_at = True, time.monotonic()
            seen = state.cancel_seen_at
            if seen is not None and time.monotonic() - seen > CANCEL_GRACE_S:
                self._abandon_cancelled(state)

    def _abandon_cancelled(self, state: RunState) -> None:
        if self.in_process:
            # Never the server itself: the job stops at its next check, however late.
            if not state.lost:
                logger.error(
                    "job %s: still running %g s after its cancel", state.job_id, CANCEL_GRACE_S
                )
                state.cancel_seen_at = time.monotonic()  # warn again after another grace
            return
        logger.error("job %s: the job ignored the cancel; ending the worker", state.job_id)
        try:
            self.queue.finish_cancelled(
                state.job_id,
                self.worker_id,
                f"Job cancelled: the recipe did not stop within {CANCEL_GRACE_S:g} s, so its "
                "worker process was ended",
            )
        finally:
            os._exit(3)


def main(argv: Sequence[str] | None = None) -> None:
    from openmaas.observability.logs import configure_logging

    parser = argparse.ArgumentParser(
        prog="python -m openmaas.jobs.worker",
        description="One job worker (`openmaas serve` and `openmaas worker` start them).",
    )
    parser.add_argument("--token", required=True, help="Makes the worker id unique.")
    parser.add_argument("--parent-pid", type=int, default=None, help="Stop when it exits.")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    tracing = configure_tracing(settings, service="openmaas-worker")
    worker = Worker.from_settings(
        settings, worker_id=worker_identity(os.getpid(), args.token), parent_pid=args.parent_pid
    )
    worker.stop_signal.install()
    try:
        worker.run()
    finally:
        worker.close()
        if tracing is not None:
            tracing.shutdown()  # sends the spans still buffered


if __name__ == "__main__":
    main()
