"""`GET /v1/audit`: the audit log, oldest first (admin keys only). Routes write to it
through `AuditorDep` (`api/auditor.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from openmaas.api.convert.metering import audit_event_out
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.query import TIMESTAMP_HINT, parse_timestamp
from openmaas.protocol.common import MAX_ROW_ID
from openmaas.protocol.metering import AuditListOut

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/audit", tags=["metering"])

MAX_PAGE = 1000


@router.get("")
def list_audit_events(
    services: ServicesDep,
    principal: PrincipalDep,
    start: Annotated[str | None, Query(description=f"Inclusive. {TIMESTAMP_HINT}.")] = None,
    end: Annotated[str | None, Query(description=f"Exclusive. {TIMESTAMP_HINT}.")] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    project: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. alias.set")] = None,
    target: Annotated[
        str | None,
        Query(max_length=512, description="A target and everything under it: models/bert."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after_id: Annotated[
        int | None, Query(ge=0, le=MAX_ROW_ID, description="next_after_id of a page.")
    ] = None,
) -> AuditListOut:
    """Audit events oldest first; page with `after_id`. Needs an `admin` key."""
    events = services.audit.query(
        start=parse_timestamp(start, "start"),
        end=parse_timestamp(end, "end"),
        actor=actor,
        project=project,
        action=action,
        target=target,
        limit=limit + 1,  # one more tells whether another page follows
        after_id=after_id,
        caller=principal,
    )
    page = events[:limit]
    return AuditListOut(
        data=[audit_event_out(event) for event in page],
        next_after_id=page[-1].id if len(events) > limit else None,
    )
