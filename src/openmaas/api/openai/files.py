"""OpenAI's Files API, for fine-tuning data: `POST /v1/files`, `GET /v1/files`,
`GET /v1/files/{file_id}`, `GET /v1/files/{file_id}/content`, `DELETE /v1/files/{file_id}`.

Files belong to the caller's project: another project's file id answers 404 exactly like an
id that never existed; admin keys see every project's files. The router needs the
`training` scope (see `app.py`).

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
from openmaas.api.dataset_audit import record_created, record_deleted
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.protocol.datasets import FileDeletedOut, FileListOut, FileOut

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/files", tags=["files"])

MAX_PAGE = 10_000  # OpenAI's largest `limit`


@router.post("")
def create_file(
    services: ServicesDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    file: Annotated[UploadFile, File(description="JSONL (or CSV, TSV, CoNLL) training data.")],
    purpose: Annotated[str, Form(description="Only 'fine-tune' is supported.")],
) -> FileOut:
    dataset = services.datasets.create(
        file.file,
        filename=file.filename or "upload",
        project=who.project,
        caller=who,
        created_by=who.actor,
        purpose=purpose,
    )
    record_created(auditor, dataset)
    return file_out(dataset)


@router.get("")
def list_files(
    services: ServicesDep,
    who: PrincipalDep,
    purpose: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    after: Annotated[str | None, Query(max_length=64, description="The last id of a page.")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="By created_at.")] = "desc",
) -> FileListOut:
    found = services.datasets.list(
        caller=who, purpose=purpose, limit=limit + 1, after=after, order=order
    )
    page = found[:limit]
    return FileListOut(
        data=[file_out(dataset) for dataset in page],
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(found) > limit,
    )


@router.get("/{file_id}")
def retrieve_file(file_id: str, services: ServicesDep, who: PrincipalDep) -> FileOut:
    return file_out(services.datasets.get(file_id, caller=who))


@router.get("/{file_id}/content")
def retrieve_file_content(
    file_id: str, services: ServicesDep, who: PrincipalDep
) -> StreamingResponse:
    dataset = services.datasets.get(file_id, caller=who)
    return StreamingResponse(
        services.datasets.content(file_id, caller=who),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(dataset.size_bytes),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(dataset.filename)}",
        },
    )


@router.delete("/{file_id}")
def delete_file(
    file_id: str, services: ServicesDep, who: PrincipalDep, auditor: AuditorDep
) -> FileDeletedOut:
    removed = services.datasets.delete(file_id, caller=who)
    record_deleted(auditor, removed)
    return FileDeletedOut(id=removed.id)
