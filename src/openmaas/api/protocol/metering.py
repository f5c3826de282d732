"""Wire models of `/v1/usage` and `/v1/audit`, shared by the server and the Python SDK.

The SDK imports this module: it must not pull in SQLAlchemy (the entities are types only).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from openmaas.errors import InvalidRequest

if TYPE_CHECKING:
    from openmaas.metering.audit import AuditEvent
    from openmaas.metering.usage import UsageTotals

TIMESTAMP_HINT = "use ISO 8601, e.g. 2024-05-01 or 2024-05-01T12:00:00Z (no zone means UTC)"


class _Response(BaseModel):
    # Unknown fields are ignored so an older SDK keeps working against a newer server.
    model_config = ConfigDict(extra="ignore")


class UsageGroupOut(_Response):
    """Totals of one group; a dimension the report is not grouped by is null."""

    day: date | None = None  # UTC day
    project: str | None = None
    key_id: int | None = None
    key_prefix: str | None = None
    model: str | None = None
    route: str | None = None
    requests: int
    errors: int  # answers with status >= 400
    input_tokens: int
    output_tokens: int
    total_tokens: int
    items: int
    audio_seconds: float
    latency_ms_mean: float
    latency_ms_max: float

    @classmethod
    def from_entity(cls, t: UsageTotals) -> UsageGroupOut:
        return cls(
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


class UsageReportOut(_Response):
    object: Literal["usage_report"] = "usage_report"
    start: datetime  # inclusive
    end: datetime  # exclusive
    group_by: list[str]
    filters: dict[str, str | int]  # the filters applied, project included for non-admins
    data: list[UsageGroupOut]
    total: UsageGroupOut  # over every group


class AuditEventOut(_Response):
    id: int
    created_at: datetime
    actor: str
    project: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str
    client_address: str

    @classmethod
    def from_entity(cls, e: AuditEvent) -> AuditEventOut:
        return cls(
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


class AuditListOut(_Response):
    object: Literal["list"] = "list"
    data: list[AuditEventOut]
    # Pass as `after_id` for the next page; null when this page is the last.
    next_after_id: int | None


def parse_timestamp(value: str | None, param: str) -> datetime | None:
    """An ISO 8601 date or time from a query string, as aware UTC; 400 naming the fix."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(
            f"{param}: {value!r} is not a timestamp; {TIMESTAMP_HINT}", param=param
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def split_list(values: list[str] | None) -> list[str]:
    """`?group_by=day,model` and `?group_by=day&group_by=model` alike."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
