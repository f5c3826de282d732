"""The API side of batches: create, retrieve, list and cancel, in OpenAI's terms.

A batch is a job of kind `batch` (`jobs.service.JobService` does the recording, the
project rules and the cancel); this service adds what OpenAI's Batch object says: its
status, its moments, its request counts and its files. A batch belongs to the project of the
key that created it: another project's batch answers 404 exactly like a missing one, and
its files are that project's too.

Example::

    batch = batches.create(BatchRequest("file-1a2b", "/v1/embeddings"), caller=principal)
    batches.get(batch.id, caller=principal).status  # "in_progress", ... "completed"
    batches.cancel(batch.id, caller=principal)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from openmaas.auth.access import require_caller
from openmaas.auth.entities import Principal
from openmaas.batches.entities import BATCH, Batch, RequestCounts
from openmaas.batches.kind import expires_at
from openmaas.batches.requests import BatchRequest
from openmaas.batches.store import BatchState, BatchStore
from openmaas.jobs.entities import Job, JobStatus, Page
from openmaas.jobs.service import JobService


class BatchService:
    """Batches of the caller's project (admins see all)."""

    def __init__(self, jobs: JobService, store: BatchStore) -> None:
        self.jobs = jobs
        self.store = store
        # Told when a batch is queued, so a batch worker starts it now (set by the runner).
        self.on_queued: Callable[[], None] | None = None

    def create(self, request: BatchRequest, *, caller: Principal) -> Batch:
        """Check the request and every line of its file, record the batch and queue it. A
        file with problems gives a `failed` batch listing them, as OpenAI reports it."""
        require_caller(caller)
        prepared = self.jobs.prepare(BATCH, request, caller=caller)
        job = self.jobs.submit(prepared, caller=caller, refuse=False)
        if job.status is JobStatus.QUEUED and self.on_queued is not None:
            self.on_queued()
        return self._view(job)

    def get(self, batch_id: str, *, caller: Principal) -> Batch:
        return self._view(self.jobs.get(batch_id, caller=caller, kind=BATCH))

    def list(self, *, caller: Principal, after: str | None = None, limit: int = 20) -> Page[Batch]:
        """Newest first; `after` is the last batch id of the previous page."""
        page = self.jobs.list(caller=caller, after=after, limit=limit, kind=BATCH)
        ids = [job.id for job in page.items]
        states = self.store.states(ids)
        counts = self.store.counts(ids)
        return Page(
            [self._view(job, states.get(job.id), counts.get(job.id)) for job in page.items],
            page.has_more,
        )

    def cancel(self, batch_id: str, *, caller: Principal) -> Batch:
        """A batch not running yet is cancelled at once; a running one is `cancelling`
        until its worker has finished the requests in flight and written its files."""
        job = self.jobs.cancel(batch_id, caller=caller, kind=BATCH)
        self.store.mark(job.id, cancelling_at=datetime.now(UTC))
        return self._view(job)

    def _view(
        self,
        job: Job,
        state: BatchState | None = None,
        counts: tuple[int, int] | None = None,
    ) -> Batch:
        state = state or self.store.state(job.id)
        total = state.total if state is not None else 0
        if counts is None:
            counts = self.store.counts([job.id]).get(job.id, (0, 0))
        errors = state.errors if state is not None else ()
        if not errors and job.status is JobStatus.FAILED and job.error:
            errors = (dict(job.error) | {"line": None},)
        finished = job.finished_at
        expired = state.expired_at if state is not None else None
        return Batch(
            id=job.id,
            project=job.project,
            endpoint=str(job.options.get("endpoint") or job.task),
            input_file_id=job.training_file,
            completion_window=str(job.options.get("completion_window") or "24h"),
            status=_status(job, state),
            created_at=job.created_at,
            expires_at=expires_at(job),
            request_counts=RequestCounts(total=total, completed=counts[0], failed=counts[1]),
            metadata=dict(job.options.get("metadata") or {}),
            errors=errors,
            output_file_id=state.output_file_id if state is not None else None,
            error_file_id=state.error_file_id if state is not None else None,
            in_progress_at=state.in_progress_at if state is not None else None,
            finalizing_at=state.finalizing_at if state is not None else None,
            completed_at=finished if job.status is JobStatus.SUCCEEDED and not expired else None,
            failed_at=finished if job.status is JobStatus.FAILED else None,
            expired_at=expired,
            cancelling_at=state.cancelling_at if state is not None else None,
            cancelled_at=finished if job.status is JobStatus.CANCELLED else None,
        )


def _status(job: Job, state: BatchState | None) -> str:
    status = job.status
    if status is JobStatus.VALIDATING_FILES:
        return "validating"
    if status is JobStatus.FAILED:
        return "failed"
    if status is JobStatus.CANCELLED:
        return "cancelled"
    if status is JobStatus.SUCCEEDED:
        return "expired" if state is not None and state.expired_at is not None else "completed"
    if job.cancel_requested:
        return "cancelling"
    if state is not None and state.finalizing_at is not None:
        return "finalizing"
    return "in_progress"
