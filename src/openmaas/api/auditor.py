"""`AuditorDep`: the audit log bound to one request, with which mutating routes (of every
protocol) record what they did. The events are read at `GET /v1/audit` (`api/admin/audit.py`).

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

from fastapi import Depends, Request

from openmaas.api.deps import CallerDep, PrincipalDep, ServicesDep, client_address
from openmaas.metering.audit import AuditEvent, AuditLog
from openmaas.observability.logs import request_id_var

logger = logging.getLogger("openmaas.audit")


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
