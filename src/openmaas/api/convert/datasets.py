"""Datasets as wire models: OpenAI's File object, our dataset summary and detail."""

from __future__ import annotations

from openmaas.datasets.files import StoredFile
from openmaas.datasets.service import Dataset
from openmaas.protocol.datasets import (
    DatasetOut,
    DatasetSummaryOut,
    FileOut,
    ReportOut,
    SchemaOut,
    StatsOut,
)


def file_out(stored: StoredFile) -> FileOut:
    return FileOut(
        id=stored.id,
        bytes=stored.size_bytes,
        created_at=int(stored.created_at.timestamp()),
        filename=stored.filename,
        purpose=stored.purpose,
        status=stored.status,
        status_details=stored.status_details,
    )


def dataset_summary_out(dataset: Dataset) -> DatasetSummaryOut:
    return DatasetSummaryOut(
        id=dataset.id,
        project=dataset.project,
        filename=dataset.filename,
        format=dataset.format.value,
        bytes=dataset.size_bytes,
        status=dataset.status.value,
        task=dataset.task.value,
        rows=dataset.stats.rows,
        errors=dataset.report.errors,
        content_sha256=dataset.content_sha256,
        created_at=dataset.created_at,
        created_by=dataset.created_by,
    )


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut(
        id=dataset.id,
        project=dataset.project,
        purpose=dataset.purpose,
        filename=dataset.filename,
        format=dataset.format.value,
        bytes=dataset.size_bytes,
        sha256=dataset.sha256,
        content_sha256=dataset.content_sha256,
        status=dataset.status.value,
        status_details=dataset.status_details,
        task=dataset.task.value,
        created_at=dataset.created_at,
        created_by=dataset.created_by,
        schema_=SchemaOut.model_validate(dataset.schema.to_dict()),
        stats=StatsOut.model_validate(dataset.stats.to_dict()),
        report=ReportOut.model_validate(dataset.report.to_dict()),
    )
