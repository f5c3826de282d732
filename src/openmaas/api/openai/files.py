"""OpenAI's Files API, for fine-tuning data and batches: `POST /v1/files`, `GET /v1/files`,
`GET /v1/files/{file_id}`, `GET /v1/files/{file_id}/content`, `DELETE /v1/files/{file_id}`.

Files belong to the caller's project: another project's file id answers 404 exactly like an
id that never existed; admin keys see every project's files. The router needs the
`training` or the `inference` scope (see `app.py`), and a purpose's files need its own:
`fine-tune` files the `training` scope, `batch` and `batch_output` files the `inference`
scope; a file of a purpose the key does not cover answers 404 like a missing one.

A `batch` upload is kept as it is: the batch reads and checks its lines when it is created.

An upload that cannot be read at all (empty, binary, compressed, no recognisable format or
text column) is refused with 400 `invalid_file` and nothing is kept. One that can be read
but has problems is kept with `status: "error"` and `status_details` naming the first
problem, as OpenAI reports files that fail validation; the full report (every problem by
line) is at `GET /v1/datasets/{file_id}`. Oversized uploads get 413.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse

from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.datasets import file_out
from openmaas.api.dataset_audit import record_file_created, record_file_deleted
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.datasets.files import FINE_TUNE
from openmaas.protocol.datasets import FileDeletedOut, FileListOut, FileOut

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/files", tags=["files"])

MAX_PAGE = 10_000  # OpenAI's largest `limit`


@router.post("")
def create_file(
    services: ServicesDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    file: Annotated[
        UploadFile, File(description="JSONL (or CSV, TSV, CoNLL) training data, or batch requests.")
    ],
    purpose: Annotated[str, Form(description="'fine-tune' or 'batch'.")],
) -> FileOut:
    stored = services.datasets.create_file(
        file.file,
        filename=file.filename or "upload",
        project=who.project,
        caller=who,
        created_by=who.actor,
        purpose=purpose,
    )
    record_file_created(auditor, services, stored, caller=who)
    return file_out(stored)


@router.get("")
def list_files(
    services: ServicesDep,
    who: PrincipalDep,
    purpose: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    after: Annotated[str | None, Query(max_length=64, description="The last id of a page.")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="By created_at.")] = "desc",
) -> FileListOut:
    found = services.datasets.list_files(
        caller=who, purpose=purpose, limit=limit + 1, after=after, order=order
    )
    page = found[:limit]
    return FileListOut(
        data=[file_out(stored) for stored in page],
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(found) > limit,
    )


@router.get("/{file_id}")
def retrieve_file(file_id: str, services: ServicesDep, who: PrincipalDep) -> FileOut:
    return file_out(services.datasets.file(file_id, caller=who))


@router.get("/{file_id}/content")
def retrieve_file_content(
    file_id: str, services: ServicesDep, who: PrincipalDep
) -> StreamingResponse:
    stored = services.datasets.file(file_id, caller=who)
    return StreamingResponse(
        services.datasets.content(file_id, caller=who),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(stored.size_bytes),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(stored.filename)}",
        },
    )


@router.delete("/{file_id}")
def delete_file(
    file_id: str, services: ServicesDep, who: PrincipalDep, auditor: AuditorDep
) -> FileDeletedOut:
    before = services.datasets.file(file_id, caller=who)
    dataset = services.datasets.get(file_id, caller=who) if before.purpose == FINE_TUNE else None
    removed = services.datasets.delete_file(file_id, caller=who)
    record_file_deleted(auditor, removed, dataset)
    return FileDeletedOut(id=removed.id)
