"""What the batch system hands out, and how a batch's requests reach the serving path.

A batch is a job of kind `batch` seen in OpenAI's terms: its status, timestamps and request
counts come from the job row, the batch row beside it and the answers recorded so far.

Example::

    batch = batches.get("batch_1a2b", caller=principal)
    batch.status, batch.request_counts.completed, batch.output_file_id
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from openmaas.auth.entities import Principal

BATCH = "batch"  # the job kind


@dataclass(frozen=True, slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0  # answered with a 2xx
    failed: int = 0  # answered with an error, or never run (expired)


@dataclass(frozen=True, slots=True)
class Batch:
    """OpenAI's Batch object. `status`: validating, failed, in_progress, finalizing,
    completed, expired, cancelling or cancelled."""

    id: str
    project: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: datetime
    expires_at: datetime
    request_counts: RequestCounts
    metadata: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[Mapping[str, Any], ...] = ()  # {"code", "message", "param", "line"}
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: datetime | None = None
    finalizing_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    expired_at: datetime | None = None
    cancelling_at: datetime | None = None
    cancelled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LineAnswer:
    """What the serving path answered one request: its status, its body (JSON) and the id
    of the request it ran as."""

    status_code: int
    body: Any
    request_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names


class LineExecutor(Protocol):
    """Runs one request of a batch through the same path as an online request, as
    `caller`, from any thread; the API layer implements it (`api/batch_dispatch.py`)."""

    def submit(
        self, url: str, body: Mapping[str, Any], *, caller: Principal, request_id: str
    ) -> Future[LineAnswer]: ...
