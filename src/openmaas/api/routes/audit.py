"""`GET /v1/audit` (admin keys only), and `AuditorDep`, with which mutating admin routes
record what they did.

Example (a sync route, after its change has succeeded)::

    @router.delete("/models/{name}/versions/{version}")
    def delete_version(name: str, version: int, registry: RegistryDep, auditor: AuditorDep):
        before = _version_state(registry.get_version(name, version))
        registry.delete_version(name, version)
        auditor.record("version.delete", f"models/{name}/versions/{version}", before=before)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from openmaas.api.convert.metering import audit_event_out
from openmaas.api.deps import CallerDep, PrincipalDep, ServicesDep, client_address
from openmaas.api.query import TIMESTAMP_HINT, parse_timestamp
from openmaas.metering.audit import AuditEvent, AuditLog
from openmaas.observability.logs import request_id_var
from openmaas.protocol.metering import AuditListOut

logger = logging.getLogger("openmaas.audit")

router = APIRouter(prefix="/v1/audit", tags=["metering"])

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Auditor:
    """The audit log bound to one request: who, from where, under which request id."""

    log: AuditLog
    actor: str
    project: str
    request_id: str
    client_address: str

    def record(
        self,
        action: str,
        target: str,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> AuditEvent | None:
        """Record an action that has succeeded (blocks: call from a sync route or a thread).

        The action is done by now, so a failed write does not fail the request (its client
        would retry an action that happened); the event goes to the error log in full.
        """
        try:
            return self.log.record(
                self.actor,
                self.project,
                action,
                target,
                before,
                after,
                self.request_id,
                self.client_address,
            )
        except Exception:
            logger.exception(
                "audit event not written: actor=%s project=%s action=%s target=%s "
                "before=%r after=%r client=%s",
                self.actor,
                self.project,
                action,
                target,
                before,
                after,
                self.client_address,
            )
            return None


async def auditor(
    request: Request, services: ServicesDep, who: CallerDep, principal: PrincipalDep
) -> Auditor:
    request_id = getattr(request.state, "request_id", None) or request_id_var.get()
    return Auditor(
        log=services.audit,
        actor=who.actor,
        project=principal.project,
        request_id="" if request_id == "-" else request_id,
        client_address=client_address(request),
    )


AuditorDep = Annotated[Auditor, Depends(auditor)]


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
    after_id: Annotated[int | None, Query(ge=0, description="next_after_id of a page.")] = None,
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
