"""Batches as a job kind: a file of requests run through the serving path, answers kept
line by line, written at the end as OpenAI's output and error files.

- `prepare`: the endpoint, window and metadata, and an input file of purpose `batch` the
  caller can see (another project's answers 404);
- `check_inputs`: every line of the file (`batches.requests.read_lines`): a file with
  problems fails the batch, each problem listed with its line;
- `run`, on one of the server's batch workers (`batches.runner`): each request goes through
  the same middleware and routes as an online one (`LineExecutor`, the API layer's in-process
  dispatch), as the key that created the batch, read again now (its scopes and limits as
  they are; a revoked key fails the batch), at low priority (`serving.priority`), at most
  `concurrency` at a time. Each answer is recorded as it arrives, so a batch taken back after
  a restart runs only the lines still unanswered. A 429 that may be retried (a rate limit,
  a full queue) is retried after its Retry-After; any other answer, success or error, is
  the line's. The lines not run when the completion window ends are given up
  (`batch_expired`); a cancel stops sending, lets the lines in flight finish, and writes what
  was answered.

Example::

    kind = BatchJobKind(datasets=datasets, store=BatchStore(db), keys=auth, concurrency=4)
    kind.executor = InProcessDispatch(app, loop)  # done by the server's batch runner
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from openmaas.auth.access import is_admin
from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.auth.service import AuthService
from openmaas.batches.entities import BATCH, LineAnswer, LineExecutor
from openmaas.batches.requests import (
    COMPLETION_WINDOWS,
    BatchLine,
    BatchRequest,
    InvalidInputFile,
    check_request,
    problems_of,
    read_lines,
)
from openmaas.batches.store import BatchStore, Result
from openmaas.datasets.files import BATCH as BATCH_PURPOSE
from openmaas.datasets.service import DatasetService
from openmaas.errors import AuthenticationFailed, InvalidRequest, NotFound, OpenMaaSError
from openmaas.jobs.context import CREATED_BY_ADMIN, JobContext, JobStopped
from openmaas.jobs.entities import Job, NewJob
from openmaas.jobs.kinds import Admission
from openmaas.jobs.publish import JobResult

log = logging.getLogger("openmaas.batches")

STOP_CHECK_S = 0.5  # how often a run looks at its stop flag and the window while it waits
MAX_RETRY_AFTER_S = 60.0  # a 429 asking for longer is retried after this
EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
Outcome = Literal["done", "expired", "cancelled", "stopped"]


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def new_request_id() -> str:
    return f"batch_req_{secrets.token_hex(12)}"


def expires_at(job: Job) -> datetime:
    window = COMPLETION_WINDOWS.get(str(job.options.get("completion_window")), timedelta(hours=24))
    return job.created_at + window


class BatchJobKind:
    """The `batch` job kind (see the module's docstring)."""

    name = BATCH
    failure_code = "batch_failed"

    def __init__(
        self,
        *,
        datasets: DatasetService,
        store: BatchStore,
        keys: AuthService,
        concurrency: int = 4,
    ) -> None:
        self.datasets = datasets
        self.store = store
        self.keys = keys
        self.concurrency = max(1, concurrency)
        # Set by the server's batch runner once the app can take requests.
        self.executor: LineExecutor | None = None

    # -- creating ----------------------------------------------------------------------------

    def prepare(self, request: BatchRequest, *, caller: Principal) -> NewJob:
        check_request(request)
        found = self.datasets.file(request.input_file_id, caller=caller)
        if found.purpose != BATCH_PURPOSE:
            raise InvalidRequest(
                f"file {found.id!r} has purpose {found.purpose!r}; a batch reads a file "
                f"uploaded with purpose {BATCH_PURPOSE!r}",
                param="input_file_id",
            )
        return NewJob(
            id=new_batch_id(),
            kind=BATCH,
            project=caller.project,
            key_id=caller.key_id or None,
            created_by=caller.actor,
            recipe=BATCH,
            task=request.endpoint,
            base_model=None,
            training_file=found.id,
            validation_file=None,
            hyperparameters={},
            options={
                "endpoint": request.endpoint,
                "completion_window": request.completion_window,
                "metadata": dict(request.metadata),
                CREATED_BY_ADMIN: is_admin(caller),
            },
            suffix=None,
            seed=0,
            model_name="",
            alias=None,
        )

    def checking_message(self, job: NewJob) -> str:
        return f"Checking the requests of file {job.training_file}"

    def check_inputs(self, job: Job) -> Admission:
        try:
            lines = self._read(job)
        except InvalidInputFile as exc:
            self.store.refuse(job.id, list(problems_of(exc)))
            raise
        self.store.admit(job.id, len(lines))
        return Admission(f"{len(lines)} requests checked; batch queued", {"total": len(lines)})

    def _read(self, job: Job) -> list[BatchLine]:
        with self.datasets.open_file(job.training_file, caller=SYSTEM) as handle:
            return read_lines(handle, endpoint=job.task)

    # -- running -----------------------------------------------------------------------------

    def run(self, context: JobContext) -> JobResult:
        job = context.job
        executor = self.executor
        if executor is None:
            raise OpenMaaSError(
                "batches run on a server's batch workers (OPENMAAS_BATCH_RUNNERS), not on "
                "a training worker"
            )
        caller = self._caller(job)
        lines = self._read(job)
        answered = self.store.answered(job.id)
        pending = deque(line for line in lines if line.line not in answered)
        if answered:
            context.message(
                f"Resuming: {len(answered)} of {len(lines)} requests were already answered"
            )
        outcome = self._run_lines(context, executor, caller, pending)
        if outcome == "stopped":
            raise JobStopped(f"stopped with {len(pending)} requests left; they run on resume")
        if outcome == "expired":
            self.store.record(
                job.id,
                [
                    Result(line.line, new_request_id(), line.custom_id, None, error=EXPIRED)
                    for line in pending
                ],
            )
            self.store.mark(job.id, expired_at=datetime.now(UTC))
            context.message(
                f"The completion window ended: {len(pending)} requests were not run", "warn"
            )
        self.store.mark(job.id, finalizing_at=datetime.now(UTC))
        self._write_files(job, context.scratch)
        counts = self.store.request_counts(job.id, len(lines))
        summary = f"{counts.completed} of {counts.total} requests succeeded, {counts.failed} failed"
        if outcome == "cancelled":
            raise JobStopped(f"cancelled; {summary}")
        return JobResult(
            summary,
            {"total": counts.total, "completed": counts.completed, "failed": counts.failed},
        )

    def _caller(self, job: Job) -> Principal:
        """Who the requests run as: the key that created the batch, as it is now."""
        if not job.key_id:  # a server without keys (development) created it
            admin = bool(job.options.get(CREATED_BY_ADMIN))
            return Principal(
                project=job.project,
                key_id=0,
                prefix=job.created_by.removeprefix("om-") or "batch",
                scopes=(Scope.ADMIN,) if admin else (Scope.INFERENCE,),
            )
        try:
            return self.keys.principal_of_key(job.key_id, caller=SYSTEM)
        except (AuthenticationFailed, NotFound) as exc:
            raise OpenMaaSError(
                f"the API key that created this batch ({job.created_by}) can no longer be "
                f"used: {exc.message}",
                code="api_key_unusable",
            ) from None

    def _run_lines(
        self,
        context: JobContext,
        executor: LineExecutor,
        caller: Principal,
        pending: deque[BatchLine],
    ) -> Outcome:
        """Run `pending` (what is left in it was not answered) until done, stopped or
        expired."""
        job = context.job
        deadline = expires_at(job)
        in_flight: dict[Future[LineAnswer], tuple[BatchLine, str]] = {}
        waiting: list[tuple[float, BatchLine]] = []  # (monotonic time due, line): 429s
        while True:
            stopping = context.should_stop()
            expired = datetime.now(UTC) >= deadline
            if not stopping and not expired:
                while len(in_flight) < self.concurrency:
                    line = _next_line(pending, waiting)
                    if line is None:
                        break
                    line_id = new_request_id()
                    future = executor.submit(
                        line.url, line.body, caller=caller, request_id=f"req_{line_id[10:]}"
                    )
                    in_flight[future] = (line, line_id)
            if not in_flight:
                if stopping:
                    pending.extendleft(line for _, line in reversed(waiting))
                    return "cancelled" if context.state.cancel else "stopped"
                if expired:
                    pending.extend(line for _, line in waiting)
                    return "expired"
                if not pending and not waiting:
                    return "done"
                due = min(when for when, _ in waiting)
                time.sleep(min(STOP_CHECK_S, max(0.0, due - time.monotonic())))
                continue
            finished, _ = wait(in_flight, timeout=STOP_CHECK_S, return_when=FIRST_COMPLETED)
            results = []
            for future in finished:
                line, line_id = in_flight.pop(future)
                answer = _answer(future, job.id)
                delay = _retry_after(answer)
                if delay is not None:
                    waiting.append((time.monotonic() + delay, line))
                    continue
                results.append(
                    Result(
                        line.line,
                        line_id,
                        line.custom_id,
                        answer.status_code,
                        answer.request_id,
                        answer.body,
                    )
                )
            self.store.record(job.id, results)

    # -- finalizing --------------------------------------------------------------------------

    def _write_files(self, job: Job, scratch: Path) -> None:
        """The output file (answers with a 2xx) and the error file (the others), in OpenAI's
        line shape and input order; none for a side without lines."""
        state = self.store.state(job.id)
        if state is not None:
            # A run that died after writing its files: they are written again, whole.
            for stale in (state.output_file_id, state.error_file_id):
                if stale is not None:
                    with contextlib.suppress(NotFound):
                        self.datasets.delete_file(stale, caller=SYSTEM)
        scratch.mkdir(parents=True, exist_ok=True)
        paths = {True: scratch / "output.jsonl", False: scratch / "errors.jsonl"}
        written = {True: 0, False: 0}
        with paths[True].open("wb") as good, paths[False].open("wb") as bad:
            for result in self.store.results(job.id):
                (good if result.ok else bad).write(_output_line(result))
                written[result.ok] += 1
        ids: dict[bool, str | None] = {}
        for ok, path in paths.items():
            ids[ok] = None
            if written[ok]:
                name = f"{job.id}_{'output' if ok else 'error'}.jsonl"
                with path.open("rb") as handle:
                    ids[ok] = self.datasets.store_output(
                        handle,
                        filename=name,
                        project=job.project,
                        created_by=job.created_by,
                        caller=SYSTEM,
                    ).id
            path.unlink(missing_ok=True)
        self.store.set_files(job.id, ids[True], ids[False])


def _next_line(
    pending: deque[BatchLine], waiting: list[tuple[float, BatchLine]]
) -> BatchLine | None:
    """A retry that is due, else the next line not sent yet."""
    now = time.monotonic()
    for index, (due, line) in enumerate(waiting):
        if due <= now:
            del waiting[index]
            return line
    return pending.popleft() if pending else None


def _answer(future: Future[LineAnswer], job_id: str) -> LineAnswer:
    try:
        return future.result()
    except Exception:
        log.exception("batch %s: a request could not be dispatched", job_id)
        return LineAnswer(
            500,
            {
                "error": {
                    "message": "the request could not be run; the server's log has the details",
                    "type": "server_error",
                    "param": None,
                    "code": "internal_error",
                }
            },
        )


def _retry_after(answer: LineAnswer) -> float | None:
    """Seconds to wait before running the line again, for a 429 that says it may be
    retried (a rate limit, a full queue; not an exhausted quota); None: the answer stands."""
    if answer.status_code != 429 or answer.headers.get("x-should-retry") == "false":
        return None
    try:
        seconds = float(answer.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    return min(MAX_RETRY_AFTER_S, max(0.1, seconds))


def _output_line(result: Result) -> bytes:
    response = (
        {"status_code": result.status_code, "request_id": result.request_id, "body": result.body}
        if result.status_code is not None
        else None
    )
    line: dict[str, Any] = {
        "id": result.id,
        "custom_id": result.custom_id,
        "response": response,
        "error": dict(result.error) if result.error is not None else None,
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
