"""Wire shapes of OpenAI's Batch API (`/v1/batches`), shared by the server and the SDK.

Example::

    body = BatchCreate(input_file_id="file-1a2b", endpoint="/v1/embeddings",
                       completion_window="24h")
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from openmaas.protocol.common import Response


class BatchCreate(BaseModel):
    # Like OpenAI: fields this server does not know are ignored.
    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: str = Field(min_length=1, max_length=64)
    completion_window: str = Field(min_length=1, max_length=16)
    metadata: dict[str, str] | None = None


class BatchErrorOut(Response):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrorsOut(Response):
    object: Literal["list"] = "list"
    data: list[BatchErrorOut]


class BatchRequestCountsOut(Response):
    total: int
    completed: int
    failed: int


class BatchOut(Response):
    """OpenAI's Batch object (times in Unix seconds)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrorsOut | None = None
    input_file_id: str
    completion_window: str
    # validating | failed | in_progress | finalizing | completed | expired | cancelling |
    # cancelled
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCountsOut
    metadata: dict[str, str] | None = None


class BatchListOut(Response):
    object: Literal["list"] = "list"
    data: list[BatchOut]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
