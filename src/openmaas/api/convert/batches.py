"""Batches as wire models: OpenAI's Batch object."""

from __future__ import annotations

from datetime import datetime

from openmaas.batches.entities import Batch
from openmaas.protocol.batches import (
    BatchErrorOut,
    BatchErrorsOut,
    BatchOut,
    BatchRequestCountsOut,
)


def _seconds(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def batch_out(batch: Batch) -> BatchOut:
    counts = batch.request_counts
    return BatchOut(
        id=batch.id,
        endpoint=batch.endpoint,
        errors=(
            BatchErrorsOut(data=[BatchErrorOut.model_validate(e) for e in batch.errors])
            if batch.errors
            else None
        ),
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=int(batch.created_at.timestamp()),
        in_progress_at=_seconds(batch.in_progress_at),
        expires_at=_seconds(batch.expires_at),
        finalizing_at=_seconds(batch.finalizing_at),
        completed_at=_seconds(batch.completed_at),
        failed_at=_seconds(batch.failed_at),
        expired_at=_seconds(batch.expired_at),
        cancelling_at=_seconds(batch.cancelling_at),
        cancelled_at=_seconds(batch.cancelled_at),
        request_counts=BatchRequestCountsOut(
            total=counts.total, completed=counts.completed, failed=counts.failed
        ),
        metadata=dict(batch.metadata) if batch.metadata else None,
    )
