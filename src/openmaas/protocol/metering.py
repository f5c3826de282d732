"""Wire models of `/v1/usage` and `/v1/audit`, shared by the server and the Python SDK.

Example::

    report = UsageReportOut.model_validate(response.json())
    report.total.total_tokens
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from openmaas.protocol.common import Response


class UsageGroupOut(Response):
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


class UsageReportOut(Response):
    object: Literal["usage_report"] = "usage_report"
    start: datetime  # inclusive
    end: datetime  # exclusive
    group_by: list[str]
    filters: dict[str, str | int]  # the filters applied, project included for non-admins
    data: list[UsageGroupOut]
    total: UsageGroupOut  # over every group


class AuditEventOut(Response):
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


class AuditListOut(Response):
    object: Literal["list"] = "list"
    data: list[AuditEventOut]
    # Pass as `after_id` for the next page; null when this page is the last.
    next_after_id: int | None
