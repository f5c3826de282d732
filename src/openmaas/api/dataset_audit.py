"""What the audit log records when a dataset is created or deleted, whichever route did it:
`/v1/files` (OpenAI's dialect) and `/v1/datasets` (ours) are two views of the same files,
so both write the same events (`dataset.create`, `dataset.delete` on `datasets/<id>`).
A file of another purpose (a batch's requests or results) is recorded as `file.create`,
`file.delete` on `files/<id>`.

Example (in a sync route, once the upload has been stored)::

    dataset = services.datasets.create(file.file, filename=name, project=who.project, ...)
    record_created(auditor, dataset)
"""

from __future__ import annotations

from typing import Any

from openmaas.api.auditor import Auditor
from openmaas.auth.entities import Principal
from openmaas.datasets.files import FINE_TUNE, StoredFile
from openmaas.datasets.service import Dataset
from openmaas.wiring import Services


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


def file_state(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "project": stored.project,
        "purpose": stored.purpose,
        "filename": stored.filename,
        "bytes": stored.size_bytes,
        "sha256": stored.sha256,
    }


def record_file_created(
    auditor: Auditor, services: Services, stored: StoredFile, *, caller: Principal
) -> None:
    """A file of any purpose: a dataset's events for a dataset, `file.create` otherwise."""
    if stored.purpose == FINE_TUNE:
        record_created(auditor, services.datasets.get(stored.id, caller=caller))
    else:
        auditor.record("file.create", f"files/{stored.id}", after=file_state(stored))


def record_file_deleted(auditor: Auditor, stored: StoredFile, dataset: Dataset | None) -> None:
    if dataset is not None:
        record_deleted(auditor, dataset)
    else:
        auditor.record("file.delete", f"files/{stored.id}", before=file_state(stored))
