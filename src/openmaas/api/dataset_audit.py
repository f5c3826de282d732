"""What the audit log records when a dataset is created or deleted, whichever route did it:
`/v1/files` (OpenAI's dialect) and `/v1/datasets` (ours) are two views of the same files,
so both write the same events (`dataset.create`, `dataset.delete` on `datasets/<id>`).

Example (in a sync route, once the upload has been stored)::

    dataset = services.datasets.create(file.file, filename=name, project=who.project, ...)
    record_created(auditor, dataset)
"""

from __future__ import annotations

from typing import Any

from openmaas.api.auditor import Auditor
from openmaas.datasets.service import Dataset


def audit_state(dataset: Dataset) -> dict[str, Any]:
    return {
        "id": dataset.id,
        "project": dataset.project,
        "filename": dataset.filename,
        "bytes": dataset.size_bytes,
        "format": dataset.format.value,
        "status": dataset.status.value,
        "task": dataset.task.value,
        "rows": dataset.stats.rows,
        "sha256": dataset.sha256,
        "content_sha256": dataset.content_sha256,
    }


def record_created(auditor: Auditor, dataset: Dataset) -> None:
    auditor.record("dataset.create", f"datasets/{dataset.id}", after=audit_state(dataset))


def record_deleted(auditor: Auditor, dataset: Dataset) -> None:
    auditor.record("dataset.delete", f"datasets/{dataset.id}", before=audit_state(dataset))
