"""The server's batch workers: threads of the server process that claim batch jobs from the
shared job queue and run them through the server's own serving path.

Batches run where the models are loaded, beside online traffic and below it in priority,
so they are not run by the training worker processes (which claim only their own kinds).
Each runner is a job worker (`jobs.worker.Worker`) in a thread: the same claim, heartbeat,
cancel and requeue as every job. A server that stops hands its batch back (the next server
resumes it with the lines still unanswered); one that dies leaves it to be taken back after
`job_heartbeat_timeout_s`.

Example::

    runner = BatchRunner(kind, queue, registry=registry, home=home, heartbeat_s=5, count=1)
    runner.start(InProcessDispatch(app, loop))  # once the app takes requests
    ...
    runner.stop()  # blocks until the batches in hand are handed back
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

from openmaas.batches.entities import LineExecutor
from openmaas.batches.kind import BatchJobKind
from openmaas.jobs.queue import JobQueue
from openmaas.jobs.worker import Worker, worker_identity
from openmaas.registry.composition import Registry

log = logging.getLogger("openmaas.batches")


class BatchRunner:
    def __init__(
        self,
        kind: BatchJobKind,
        queue: JobQueue,
        *,
        registry: Registry,
        home: Path,
        heartbeat_s: float,
        count: int,
    ) -> None:
        self.kind = kind
        self.queue = queue
        self.registry = registry
        self.home = home
        self.heartbeat_s = heartbeat_s
        self.count = count
        self._workers: list[tuple[Worker, threading.Thread]] = []

    @property
    def running(self) -> bool:
        return bool(self._workers)

    def start(self, executor: LineExecutor) -> None:
        """Start `count` workers that run batches through `executor` (none when 0)."""
        if self._workers or self.count < 1:
            return
        self.kind.executor = executor
        token = secrets.token_hex(4)
        for index in range(self.count):
            worker = Worker(
                worker_id=worker_identity(os.getpid(), f"batch{index}-{token}"),
                queue=self.queue,
                kinds=[self.kind],
                registry=self.registry,
                home=self.home,
                heartbeat_s=self.heartbeat_s,
                in_process=True,
            )
            thread = threading.Thread(target=worker.run, name=f"batch-runner-{index}", daemon=True)
            thread.start()
            self._workers.append((worker, thread))
        log.info("started %d batch runner(s)", self.count)

    def wake(self) -> None:
        """A batch was queued: the idle runners look now rather than at their next poll."""
        for worker, _ in self._workers:
            worker.wake()

    def stop(self) -> None:
        """Stop every runner: each finishes the requests in flight, records them and hands
        its batch back to the queue. Blocks (call it off the event loop the requests need)."""
        workers, self._workers = self._workers, []
        for worker, _ in workers:
            worker.stop()
        for worker, thread in workers:
            thread.join()
            worker.close()
        self.kind.executor = None
