"""Usage totals and audit events as wire models."""

from __future__ import annotations

from openmaas.metering.audit import AuditEvent
from openmaas.metering.usage import UsageTotals
from openmaas.protocol.metering import AuditEventOut, UsageGroupOut


def usage_group_out(t: UsageTotals) -> UsageGroupOut:
    return UsageGroupOut(
        day=t.day,
        project=t.project,
        key_id=t.key_id,
        key_prefix=t.key_prefix,
        model=t.model,
        route=t.route,
        requests=t.requests,
        errors=t.errors,
        input_tokens=t.input_tokens,
        output_tokens=t.output_tokens,
        total_tokens=t.total_tokens,
        items=t.items,
        audio_seconds=t.audio_seconds,
        latency_ms_mean=t.latency_ms_mean,
        latency_ms_max=t.latency_ms_max,
    )


def audit_event_out(e: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=e.id,
        created_at=e.created_at,
        actor=e.actor,
        project=e.project,
        action=e.action,
        target=e.target,
        before=e.before,
        after=e.after,
        request_id=e.request_id,
        client_address=e.client_address,
    )
