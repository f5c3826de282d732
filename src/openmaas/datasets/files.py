"""The files of `/v1/files` whatever they hold: their purposes, the scope each purpose needs,
and the File object every purpose shares (`DatasetService` keeps them; a dataset is the
`fine-tune` file described in full).

Example::

    readable_purposes(principal)  # ("batch", "batch_output") for an inference-only key
    check_purpose(principal, "fine-tune")  # PermissionDenied without the training scope
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope, scopes_cover
from openmaas.datasets.report import ValidationReport
from openmaas.errors import InvalidRequest, PermissionDenied
from openmaas.store.tables import DatasetRow

FINE_TUNE = "fine-tune"
BATCH = "batch"  # a batch's requests, uploaded
BATCH_OUTPUT = "batch_output"  # a batch's results, written by the server
PURPOSES = (FINE_TUNE, BATCH)  # what an upload may be
# The scope whose keys see a purpose's files.
PURPOSE_SCOPES: Mapping[str, Scope] = {
    FINE_TUNE: Scope.TRAINING,
    BATCH: Scope.INFERENCE,
    BATCH_OUTPUT: Scope.INFERENCE,
}
PLAIN_FORMAT = "jsonl"  # what the format column says of a file that is no dataset


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file of any purpose, as OpenAI's File object describes it."""

    id: str
    project: str
    purpose: str
    filename: str
    size_bytes: int
    sha256: str
    status: str  # processed | error
    status_details: str | None
    created_at: datetime
    created_by: str


def readable_purposes(caller: Principal) -> tuple[str, ...]:
    """The purposes whose files `caller`'s scopes cover."""
    return tuple(
        purpose for purpose, scope in PURPOSE_SCOPES.items() if scopes_cover(caller.scopes, scope)
    )


def check_purpose(caller: Principal, purpose: str) -> None:
    """An upload's purpose: one this server keeps, and one the caller's key may write."""
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"purpose {purpose!r} is not supported: this server keeps files for "
            f"{', '.join(repr(p) for p in PURPOSES)}",
            param="purpose",
        )
    scope = PURPOSE_SCOPES[purpose]
    if not scopes_cover(caller.scopes, scope):
        raise PermissionDenied(
            f"this API key lacks the {scope.value!r} scope that {purpose!r} files need",
            param="purpose",
            code="insufficient_scope",
        )


def file_entity(row: DatasetRow) -> StoredFile:
    details = ValidationReport.from_dict(row.report).summary() if row.report else None
    return StoredFile(
        id=row.id,
        project=row.project,
        purpose=row.purpose,
        filename=row.filename,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        status=row.status,
        status_details=details,
        created_at=row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC),
        created_by=row.created_by,
    )
