"""A training worker process: claim a job, train it with its recipe, register the result.

Run by the supervisor (`openmaas serve`, `openmaas worker`) as
`python -m openmaas.training.worker --token <hex>`; it reads the same `OPENMAAS_*` settings.
While a job runs a thread heartbeats; `should_stop` tells the recipe to stop when the job is
cancelled, when the worker is asked to stop (SIGTERM/SIGINT: finish the step, checkpoint,
hand the job back to the queue), when its parent died, or when the job was taken from it
after missed heartbeats. Checkpoints are copied into the artifact store (encrypted when a
key is set); a job that comes back resumes from its newest one.

Example::

    worker = Worker.from_settings(Settings(), worker_id=worker_identity(os.getpid(), "ab12"))
    worker.run()  # until stop() (or a signal, when installed by main())
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import select
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from openmaas.auth.entities import SYSTEM
from openmaas.crypto import Keyring, key_from_settings
from openmaas.errors import NotFound, OpenMaaSError
from openmaas.registry.artifacts import CHUNK_BYTES, ArtifactStore
from openmaas.registry.composition import Registry
from openmaas.registry.entities import Lineage, ModelVersion
from openmaas.registry.files import OpenedVersion
from openmaas.registry.intake import ArchiveLimits, walk_directory
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.settings import Settings
from openmaas.store.database import Database
from openmaas.training.entities import BATCH_NAMES, EPOCH_NAMES, Job
from openmaas.training.jobs import DatasetSource, load_recipes, new_checkpoint_id, split_examples
from openmaas.training.queue import JobQueue, LeaseLost
from openmaas.training.recipe import (
    Checkpoint,
    Recipe,
    TrainingContext,
    TrainingResult,
    TrainingStopped,
)

logger = logging.getLogger("openmaas.training.worker")

IDLE_POLL_S = 1.0  # an idle worker looks for queued jobs this often (a database has no push)
STOP_CHECK_S = 0.5  # `should_stop` reads the job's cancel flag at most this often
KEEP_CHECKPOINTS = 3  # per job, newest first; older ones are deleted from the store
# A cancelled job whose recipe does not stop within this time: the worker process exits
# (its supervisor starts another) rather than keep a cancelled job's resources busy.
CANCEL_GRACE_S = 30.0
CHECKPOINTS_DIR = "jobs"  # under the artifact root: jobs/<job id>/<checkpoint id>/...
LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}


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
            select.select([self._read], [], [], timeout_s)
        return self.requested

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


@dataclass(slots=True)
class _RunState:
    """What the heartbeat thread and `should_stop` learn about the job being trained."""

    job_id: str
    cancel: bool = False
    cancel_seen_at: float | None = None
    lost: bool = False
    checked_at: float = 0.0
    started_at: float = 0.0
    first_step: int = 0
    total_steps: int | None = None


class Worker:
    """Claims and runs jobs one at a time until stopped."""

    def __init__(
        self,
        *,
        worker_id: str,
        queue: JobQueue,
        registry: Registry,
        datasets: DatasetSource,
        recipes: Mapping[str, Recipe],
        home: Path,
        heartbeat_s: float,
        device: str = "cpu",
        threads: int | None = None,
        parent_pid: int | None = None,
        stop: StopSignal | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.queue = queue
        self.registry = registry
        self.artifacts: ArtifactStore = registry.artifacts
        self.datasets = datasets
        self.recipes = dict(recipes)
        self.jobs_dir = home / "training" / "jobs"
        self.heartbeat_s = heartbeat_s
        self.device = device
        self.threads = threads  # torch intra-op threads for jobs; None: torch's default
        self.parent_pid = parent_pid
        self.stop_signal = stop or StopSignal()
        self._state: _RunState | None = None
        self._reclaimed_at = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, worker_id: str, parent_pid: int | None = None
    ) -> Worker:
        from openmaas.datasets.service import DatasetService

        keys = Keyring(key_from_settings(settings))
        db = Database(settings.database_url)
        db.migrate()
        artifacts = ArtifactStore(settings.artifact_root, keys)
        artifacts.start()
        registry = Registry.create(
            db,
            artifacts,
            allow_pickle=False,  # what a job registers is always in a safe format
            limits=ArchiveLimits(
                max_total_bytes=settings.max_extracted_bytes,
                max_members=settings.max_archive_members,
            ),
        )
        return cls(
            worker_id=worker_id,
            queue=JobQueue(
                db,
                heartbeat_timeout_s=settings.job_heartbeat_timeout_s,
                max_attempts=settings.job_max_attempts,
            ),
            registry=registry,
            datasets=DatasetService(db, artifacts),
            recipes=load_recipes(settings.extra_recipes),
            home=settings.home,
            heartbeat_s=settings.job_heartbeat_s,
            device=settings.device,
            threads=settings.training_threads,
            parent_pid=parent_pid,
        )

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        logger.info(
            "worker %s ready (recipes: %s)", self.worker_id, ", ".join(sorted(self.recipes))
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

    def close(self) -> None:
        self.stop_signal.close()
        self.queue.db.close()

    def _next_job(self) -> Job | None:
        # Reclaiming is cheap but takes the write lock: every worker does it now and then.
        if time.monotonic() - self._reclaimed_at >= min(10.0, self.queue.heartbeat_timeout_s / 2):
            self._reclaimed_at = time.monotonic()
            for job_id in self.queue.reclaim_stale():
                logger.warning("job %s: its worker stopped heartbeating; requeued", job_id)
        return self.queue.claim(self.worker_id)

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    # -- one job -------------------------------------------------------------------------------

    def run_job(self, job: Job) -> None:
        logger.info("worker %s: running job %s (recipe %s)", self.worker_id, job.id, job.recipe)
        state = _RunState(job_id=job.id, started_at=time.monotonic())
        self._state = state
        if self.threads is not None:
            import torch  # here, not at the top: a worker with no job imports no torch

            torch.set_num_threads(self.threads)
        beat_stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(state, beat_stop), name=f"heartbeat-{job.id}", daemon=True
        )
        beat.start()
        try:
            self._train_and_register(job, state)
        except LeaseLost:
            logger.warning("job %s was taken from worker %s; dropping it", job.id, self.worker_id)
        except Exception as exc:  # never let one job take the worker down
            self._fail(job, "training_failed", exc)
        finally:
            beat_stop.set()
            beat.join()
            self._state = None

    def _train_and_register(self, job: Job, state: _RunState) -> None:
        recipe = self.recipes.get(job.recipe)
        if recipe is None:
            raise OpenMaaSError(
                f"recipe {job.recipe!r} is not installed on worker {self.worker_id} "
                f"(it has: {', '.join(sorted(self.recipes))})"
            )
        job_dir = self.jobs_dir / job.id
        output_dir, work_dir = job_dir / "output", job_dir / "work"
        shutil.rmtree(output_dir, ignore_errors=True)
        output_dir.mkdir(parents=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        train, validation, test = split_examples(self.datasets, job)
        resume = self._restore_checkpoint(job, work_dir)
        state.first_step = resume.step if resume is not None else 0
        state.total_steps = _estimate_total_steps(job.hyperparameters, len(train))
        base: OpenedVersion | None = None
        base_version = job.options.get("base_version")
        if base_version:
            base = self.registry.open_files(str(base_version), caller=SYSTEM)
        try:
            ctx = TrainingContext(
                job_id=job.id,
                task=job.task,
                train=train,
                validation=validation,
                test=test,
                hyperparameters=dict(job.hyperparameters),
                seed=job.seed,
                output_dir=output_dir,
                work_dir=work_dir,
                device=self.device,
                base_model=base.directory if base is not None else None,
                base_model_params=dict(base.version.params) if base is not None else {},
                base_model_reference=(
                    f"{base.version.model}:{base.version.version}" if base is not None else None
                ),
                base_model_task=base.version.task if base is not None else None,
                base_model_runtime=base.version.runtime if base is not None else None,
                resume_from=resume,
                on_message=lambda level, text: self._message(job, level, text),
                on_metrics=lambda step, epoch, metrics: self._metrics(job, step, epoch, metrics),
                on_checkpoint=lambda directory, step, epoch, metrics: self._checkpoint(
                    job, directory, step, epoch, metrics
                ),
                should_stop=self._should_stop,
                on_plan=lambda total: self._plan(state, total),
            )
            try:
                result = recipe.train(ctx)
            except TrainingStopped:
                self._stopped(job, state, job_dir)
                return
        finally:
            if base is not None:
                base.close()
        # Finished: a stop request no longer matters (registering is quick), a cancel does.
        lease = self.queue.lease(job.id, self.worker_id)
        if not lease.held:
            raise LeaseLost(job.id)
        if lease.cancel_requested:
            state.cancel = True
            self._stopped(job, state, job_dir)
            return
        try:
            version = self._register(job, result, output_dir, base_version)
        except Exception as exc:
            self._fail(job, "registration_failed", exc)
            return
        explicit = bool(job.options.get("explicit_model_name"))
        name = f"{version.model}:{version.version}" if explicit else version.model
        self.queue.succeed(
            job.id,
            self.worker_id,
            fine_tuned_model=name,
            metrics=_finite(result.metrics),
            trained_tokens=result.trained_tokens,
        )
        logger.info("job %s succeeded: %s:%s", job.id, version.model, version.version)
        shutil.rmtree(job_dir, ignore_errors=True)

    def _stopped(self, job: Job, state: _RunState, job_dir: Path) -> None:
        if state.lost:
            raise LeaseLost(job.id)
        checkpoint = self.queue.latest_checkpoint(job.id)
        kept = (
            f"; checkpoint {checkpoint.id} (step {checkpoint.step}) is kept" if checkpoint else ""
        )
        if state.cancel:
            self.queue.finish_cancelled(job.id, self.worker_id, f"Job cancelled{kept}")
            shutil.rmtree(job_dir, ignore_errors=True)
        elif self.stop_signal.requested:
            self.queue.release(
                job.id,
                self.worker_id,
                f"worker {self.worker_id} is stopping; it handed the job back{kept}",
            )
        else:
            raise OpenMaaSError("the recipe stopped (TrainingStopped) although nobody asked it to")

    def _fail(self, job: Job, code: str, exc: BaseException) -> None:
        state = self._state
        if state is not None and state.lost:
            return  # the job is someone else's now
        message = f"{type(exc).__name__}: {exc}"
        logger.error("job %s failed: %s", job.id, message, exc_info=exc)
        try:
            self.queue.record_event(
                job.id,
                f"Traceback of the failure ({type(exc).__name__})",
                level="error",
                data={"traceback": "".join(traceback.format_exception(exc))},
            )
            self.queue.fail(job.id, self.worker_id, code=code, message=message)
        except LeaseLost:
            pass
        shutil.rmtree(self.jobs_dir / job.id, ignore_errors=True)

    # -- the context's callbacks ---------------------------------------------------------------

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

    def _message(self, job: Job, level: str, text: str) -> None:
        self.queue.record_event(job.id, text, level=LEVELS.get(level, "info"))

    @staticmethod
    def _plan(state: _RunState, total_steps: int) -> None:
        if total_steps >= 1:
            state.total_steps = total_steps  # the recipe's count replaces the guess

    def _metrics(self, job: Job, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        state = self._state
        values = _finite(metrics)
        data: dict[str, Any] = {"step": step, "epoch": epoch, **values}
        total = state.total_steps if state is not None else None
        if total is not None:
            total = max(total, step)
            data["total_steps"] = total
            if state is not None and step > state.first_step:
                rate = (step - state.first_step) / max(1e-6, time.monotonic() - state.started_at)
                data["estimated_finish"] = int(time.time() + (total - step) / rate)
        shown = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
        of_total = f"/{total}" if total is not None else ""
        self.queue.record_event(
            job.id, f"Step {step}{of_total} (epoch {epoch}): {shown}", type="metrics", data=data
        )

    def _checkpoint(
        self, job: Job, directory: Path, step: int, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        checkpoint_id = new_checkpoint_id()
        location = f"{CHECKPOINTS_DIR}/{job.id}/{checkpoint_id}"
        target = self.artifacts.root / location
        try:
            for rel, path in sorted(walk_directory(directory).items()):
                with path.open("rb") as source:
                    self.artifacts.write_stream(source, target / rel)
            self.queue.record_checkpoint(
                job.id,
                self.worker_id,
                checkpoint_id=checkpoint_id,
                step=step,
                epoch=epoch,
                metrics=_finite(metrics),
                location=location,
            )
        except BaseException as exc:
            shutil.rmtree(target, ignore_errors=True)
            if isinstance(exc, LeaseLost) and self._state is not None:
                self._state.lost = True
            raise
        for old in self.queue.prune_checkpoints(job.id, KEEP_CHECKPOINTS):
            shutil.rmtree(self.artifacts.root / old, ignore_errors=True)

    def _restore_checkpoint(self, job: Job, work_dir: Path) -> Checkpoint | None:
        """The newest checkpoint as plaintext files under the work directory."""
        checkpoint = self.queue.latest_checkpoint(job.id)
        if checkpoint is None:
            return None
        source = self.artifacts.root / checkpoint.location
        target = work_dir / "resume"
        shutil.rmtree(target, ignore_errors=True)
        for rel, path in sorted(walk_directory(source).items()):
            destination = target / rel
            destination.parent.mkdir(parents=True, exist_ok=True)
            with (
                self.artifacts.open_plaintext(path, name=rel) as plain,
                destination.open("xb") as out,
            ):
                shutil.copyfileobj(plain, out, CHUNK_BYTES)
        self.queue.record_event(
            job.id,
            f"Resuming from checkpoint {checkpoint.id} at step {checkpoint.step} "
            f"(epoch {checkpoint.epoch}) on worker {self.worker_id}",
            data={"checkpoint": checkpoint.id, "step": checkpoint.step, "epoch": checkpoint.epoch},
        )
        return Checkpoint(
            directory=target,
            step=checkpoint.step,
            epoch=checkpoint.epoch,
            metrics=checkpoint.metrics,
        )

    # -- heartbeats ----------------------------------------------------------------------------

    def _heartbeat(self, state: _RunState, stop: threading.Event) -> None:
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

    def _abandon_cancelled(self, state: _RunState) -> None:
        logger.error("job %s: the recipe ignored the cancel; ending the worker", state.job_id)
        try:
            self.queue.finish_cancelled(
                state.job_id,
                self.worker_id,
                f"Job cancelled: the recipe did not stop within {CANCEL_GRACE_S:g} s, so its "
                "worker process was ended",
            )
        finally:
            os._exit(3)

    # -- registration --------------------------------------------------------------------------

    def _register(
        self, job: Job, result: TrainingResult, output_dir: Path, base_version: Any
    ) -> ModelVersion:
        done = self._registered_already(job)
        if done is not None:
            return done
        base = str(base_version) if base_version else None
        lineage = Lineage(
            source={
                "type": "training-job",
                "job_id": job.id,
                "recipe": job.recipe,
                "base_model": base,
                "training_file": job.training_file,
                "validation_file": job.validation_file,
            },
            parent_version=_parent_version(job.model_name, base),
            transform="fine-tune" if base else "train",
            dataset_id=job.training_file,
            dataset_sha256=str(job.options.get("dataset_sha256") or "") or None,
            job_id=job.id,
        )
        spec = VersionSpec(
            task=result.task,
            runtime=result.runtime,
            description=f"Trained by job {job.id} (recipe {job.recipe})",
            params={
                **dict(result.params),
                "training": {
                    "job_id": job.id,
                    "recipe": job.recipe,
                    "hyperparameters": dict(job.hyperparameters),
                    "seed": job.seed,
                    "report": dict(result.report),
                },
            },
            metrics=_finite(result.metrics),
            lineage=lineage,
            alias=job.alias,
            created_by=job.created_by,
            project=job.project,
        )
        return self.registry.registration.register_plan(
            job.model_name, plan_directory(output_dir), spec, caller=SYSTEM
        )

    def _registered_already(self, job: Job) -> ModelVersion | None:
        # A worker that died between registering and recording success: keep that version.
        try:
            versions = self.registry.store.list_versions(job.model_name, caller=SYSTEM)
        except NotFound:
            return None
        return next((v for v in versions if v.lineage.job_id == job.id), None)


def _estimate_total_steps(hyperparameters: Mapping[str, Any], n_train: int) -> int | None:
    epochs = next((hyperparameters[n] for n in EPOCH_NAMES if n in hyperparameters), None)
    batch = next((hyperparameters[n] for n in BATCH_NAMES if n in hyperparameters), None)
    if not isinstance(epochs, int) or not isinstance(batch, int) or epochs < 1 or batch < 1:
        return None
    return epochs * math.ceil(n_train / batch)


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only, and no NaN or infinity (JSON and the registry refuse them)."""
    return {
        name: float(value)
        for name, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _parent_version(model_name: str, base: str | None) -> int | None:
    if base is None:
        return None
    name, _, version = base.rpartition(":")
    return int(version) if name == model_name and version.isdigit() else None


def main(argv: Sequence[str] | None = None) -> None:
    from openmaas.observability.logs import configure_logging

    parser = argparse.ArgumentParser(
        prog="python -m openmaas.training.worker",
        description="One training worker (`openmaas serve` and `openmaas worker` start them).",
    )
    parser.add_argument("--token", required=True, help="Makes the worker id unique.")
    parser.add_argument("--parent-pid", type=int, default=None, help="Stop when it exits.")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    worker = Worker.from_settings(
        settings, worker_id=worker_identity(os.getpid(), args.token), parent_pid=args.parent_pid
    )
    worker.stop_signal.install()
    try:
        worker.run()
    finally:
        worker.close()


if __name__ == "__main__":
    main()
