"""OpenAI's Batch API: `POST /v1/batches`, `GET /v1/batches`, `GET /v1/batches/{batch_id}`,
`POST /v1/batches/{batch_id}/cancel`, so the stock `openai` client runs batches here.

A batch's requests go to `endpoint` (`/v1/embeddings`, `/v1/chat/completions`,
`/v1/classify`, any task route: `batches.requests.ENDPOINTS`), read from a file uploaded with
purpose `batch`; its answers come back as `output_file_id` (the 2xx answers) and
`error_file_id` (the others) in OpenAI's line shape, read with `GET /v1/files/{id}/content`.
A file with bad lines gives a `failed` batch whose `errors` name each line. Batches and
their files belong to the caller's project. The router needs the `inference` scope.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.batches import batch_out
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.batches.entities import Batch
from openmaas.batches.requests import BatchRequest
from openmaas.protocol.batches import BatchCreate, BatchListOut, BatchOut

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/batches", tags=["batches"])

MAX_PAGE = 100  # OpenAI's largest `limit`


def _audit_state(batch: Batch) -> dict[str, Any]:
    return {
        "status": batch.status,
        "endpoint": batch.endpoint,
        "input_file_id": batch.input_file_id,
        "total": batch.request_counts.total,
    }


@router.post("")
async def create_batch(
    body: BatchCreate, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> BatchOut:
    request = BatchRequest(
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=dict(body.metadata or {}),
    )

    def create() -> Batch:
        batch = services.batches.create(request, caller=principal)
        auditor.record("batch.create", f"batches/{batch.id}", after=_audit_state(batch))
        return batch

    # Reads and checks every line of the file, and writes: off the event loop.
    return batch_out(await run_in_threadpool(create))


@router.get("")
def list_batches(
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=64, description="The last id of a page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> BatchListOut:
    page = services.batches.list(caller=principal, after=after, limit=limit)
    data = [batch_out(batch) for batch in page.items]
    return BatchListOut(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.get("/{batch_id}")
def retrieve_batch(batch_id: str, services: ServicesDep, principal: PrincipalDep) -> BatchOut:
    return batch_out(services.batches.get(batch_id, caller=principal))


@router.post("/{batch_id}/cancel")
def cancel_batch(
    batch_id: str, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> BatchOut:
    before = services.batches.get(batch_id, caller=principal)
    batch = services.batches.cancel(batch_id, caller=principal)
    if before.status != batch.status:
        auditor.record(
            "batch.cancel",
            f"batches/{batch.id}",
            before=_audit_state(before),
            after=_audit_state(batch),
        )
    return batch_out(batch)
