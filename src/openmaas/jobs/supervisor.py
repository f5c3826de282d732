"""Keeps N job worker processes running and hands back the jobs of those that die.

`openmaas serve` runs one beside the HTTP server (OPENMAAS_WORKERS processes) and
`openmaas worker` runs one on its own. A worker that exits while the supervisor is not
stopping is restarted (after a growing pause when it keeps dying young), and any job it was
running is requeued at once, counting one lost run: the next worker resumes it from its
last checkpoint without waiting for the heartbeat timeout. Stopping sends SIGTERM (each
worker finishes its step, checkpoints and hands its job back), then SIGKILL after
`stop_grace_s`.

Example::

    supervisor = Supervisor(settings, workers=2)
    supervisor.start()
    ...
    supervisor.stop()

    with running_workers(settings):  # beside a server that stops on SIGTERM
        uvicorn.run(app)
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from openmaas.jobs.queue import JobQueue
from openmaas.jobs.worker import worker_identity
from openmaas.jobs.worker_env import remove_worker_key, worker_environment
from openmaas.settings import Settings
from openmaas.store.database import Database

logger = logging.getLogger("openmaas.jobs.supervisor")

STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL: a step and a checkpoint fit well inside
YOUNG_DEATH_S = 10.0  # a worker dying sooner than this after its start is crash-looping
MAX_BACKOFF_S = 30.0


@dataclass(slots=True)
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    worker_id: str = ""
    started_at: float = 0.0
    backoff_s: float = 0.0
    restarts: int = 0
    watcher: threading.Thread | None = field(default=None, repr=False)


class Supervisor:
    """Starts `workers` worker processes and restarts those that die until `stop()`."""

    def __init__(
        self, settings: Settings, workers: int, *, stop_grace_s: float = STOP_GRACE_S
    ) -> None:
        self.settings = settings
        self.stop_grace_s = stop_grace_s
        self._slots = [_Slot(index) for index in range(workers)]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._queue: JobQueue | None = None
        self._env: dict[str, str] | None = None

    @property
    def worker_ids(self) -> list[str]:
        with self._lock:
            return [slot.worker_id for slot in self._slots if slot.process is not None]

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [slot.process.pid for slot in self._slots if slot.process is not None]

    def start(self) -> None:
        if not self._slots:
            return
        self._db = Database(self.settings.database_url)
        self._queue = JobQueue(
            self._db,
            heartbeat_timeout_s=self.settings.job_heartbeat_timeout_s,
            max_attempts=self.settings.job_max_attempts,
        )
        self._env = worker_environment(self.settings, os.environ)
        for slot in self._slots:
            self._spawn(slot)
        logger.info("started %d training worker(s)", len(self._slots))

    def stop(self) -> None:
        """SIGTERM every worker, SIGKILL those still running after the grace period, and
        requeue whatever they still held (no lost run counted: nothing went wrong)."""
        self._stopping.set()
        with self._lock:
            running = [(s, s.process) for s in self._slots if s.process is not None]
        for _, process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        for slot, process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker %s did not stop in time; killing it", slot.worker_id)
                process.kill()
                process.wait()
            if slot.watcher is not None:
                slot.watcher.join()
            self._reclaim(slot.worker_id, "its supervisor stopped it", count_attempt=False)
        if self._db is not None:
            self._db.close()
        remove_worker_key(self.settings)

    # -- one worker --------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        token = secrets.token_hex(4)
        command = [
            sys.executable,
            "-m",
            "openmaas.jobs.worker",
            "--token",
            token,
            "--parent-pid",
            str(os.getpid()),
        ]
        # The same state as this process, whatever flags set it; none of its secrets.
        env = self._env
        assert env is not None  # set by start(), the only caller
        with self._lock:
            if self._stopping.is_set():  # stop() has taken its list of workers
                return
            # A session of its own: a terminal's Ctrl-C reaches the supervisor, which stops
            # the workers in order, instead of every process at once.
            process = subprocess.Popen(command, env=env, start_new_session=True)
            slot.process = process
            slot.worker_id = worker_identity(process.pid, token)
            slot.started_at = time.monotonic()
            slot.watcher = threading.Thread(
                target=self._watch,
                args=(slot, process),
                name=f"worker-watch-{slot.index}",
                daemon=True,
            )
            slot.watcher.start()

    def _watch(self, slot: _Slot, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        if self._stopping.is_set():
            return
        lived_s = time.monotonic() - slot.started_at
        reason = (
            f"worker {slot.worker_id} was killed by {signal.Signals(-code).name}"
            if code < 0
            else f"worker {slot.worker_id} exited with status {code}"
        )
        logger.warning("%s after %.0f s; restarting it", reason, lived_s)
        self._reclaim(slot.worker_id, reason, count_attempt=True)
        # A worker that keeps dying young (a broken install, an unreachable database) is
        # restarted ever more slowly instead of in a tight loop.
        slot.backoff_s = (
            min(MAX_BACKOFF_S, max(1.0, slot.backoff_s * 2)) if lived_s < YOUNG_DEATH_S else 0.0
        )
        if self._stopping.wait(slot.backoff_s):
            return
        slot.restarts += 1
        self._spawn(slot)

    def _reclaim(self, worker_id: str, reason: str, *, count_attempt: bool) -> None:
        if self._queue is None or not worker_id:
            return
        try:
            for job_id in self._queue.reclaim_worker(
                worker_id, reason, count_attempt=count_attempt
            ):
                logger.warning("job %s: %s; requeued", job_id, reason)
        except Exception:
            # The jobs are not lost: the heartbeat timeout reclaims them later.
            logger.exception("could not requeue the jobs of worker %s", worker_id)


@contextmanager
def running_workers(settings: Settings) -> Iterator[Supervisor]:
    """OPENMAAS_WORKERS workers while the body runs, stopped when it ends, however it ends.

    uvicorn re-raises the SIGTERM that stopped it once it has shut down; with the default
    disposition that would end this process before its workers are stopped, so SIGTERM
    becomes a `SystemExit` here, which leaves the body through this `finally`.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let nothing interrupt the stopping
        raise SystemExit(128 + signum)

    supervisor = Supervisor(settings, settings.workers)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        supervisor.start()
        yield supervisor
    finally:
        supervisor.stop()
        signal.signal(signal.SIGTERM, previous)
