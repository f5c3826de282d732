"""`GET /v1/usage`: metered usage per day, project, key, model or route; CSV for billing.

An `admin` key sees every project; any other key sees its own project only, and asking for
another one answers 404 exactly as for a project that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from openmaas.api.convert.metering import usage_group_out
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.query import TIMESTAMP_HINT, parse_timestamp, split_list
from openmaas.metering.usage import (
    DEFAULT_GROUP_BY,
    EXPORT_GROUP_BY,
    GROUPS,
    check_group_by,
    check_window,
)
from openmaas.protocol.common import MAX_ROW_ID
from openmaas.protocol.metering import UsageReportOut

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/usage", tags=["metering"])

DEFAULT_WINDOW = timedelta(days=30)
# Where a default window starting before the year 1 starts instead (subtracting overflowed).
EARLIEST = datetime.min.replace(tzinfo=UTC)

StartQuery = Annotated[
    str | None, Query(description=f"Inclusive; default 30 days before end. {TIMESTAMP_HINT}.")
]
EndQuery = Annotated[str | None, Query(description=f"Exclusive; default now. {TIMESTAMP_HINT}.")]
GroupByQuery = Annotated[
    list[str] | None,
    Query(
        description=f"Any of {', '.join(GROUPS)}, comma-separated or repeated. Default "
        f"{','.join(DEFAULT_GROUP_BY)} (JSON) or {','.join(EXPORT_GROUP_BY)} (CSV; model "
        "is always added there). Empty: totals only."
    ),
]


@router.get(
    "",
    response_model=UsageReportOut,
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"}},
)
def get_usage(
    services: ServicesDep,
    principal: PrincipalDep,
    start: StartQuery = None,
    end: EndQuery = None,
    project: Annotated[str | None, Query(max_length=128)] = None,
    key_id: Annotated[int | None, Query(ge=0, le=MAX_ROW_ID)] = None,
    key_prefix: Annotated[str | None, Query(max_length=16)] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    group_by: GroupByQuery = None,
    format: Annotated[  # the query parameter's public name
        Literal["json", "csv"], Query(description="json, or csv for the billing export.")
    ] = "json",
) -> UsageReportOut | Response:
    usage = services.usage
    until = parse_timestamp(end, "end") or datetime.now(UTC)
    since = (
        parse_timestamp(start, "start") or max(until, EARLIEST + DEFAULT_WINDOW) - DEFAULT_WINDOW
    )
    since, until = check_window(since, until)
    # Absent: the default grouping; present but empty (`?group_by=`): totals only.
    groups = None if group_by is None else check_group_by(split_list(group_by))
    visible = usage.visible_project(project, caller=principal)
    filters = {"project": visible, "key_id": key_id, "key_prefix": key_prefix, "model": model}
    if format == "csv":
        body = usage.export_csv(
            since,
            until,
            services.settings.usage_prices,
            visible,
            key_id,
            model,
            EXPORT_GROUP_BY if groups is None else groups,
            key_prefix=key_prefix,
            caller=principal,
        )
        name = f"usage-{since:%Y%m%dT%H%M%SZ}-{until:%Y%m%dT%H%M%SZ}.csv"
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    chosen = DEFAULT_GROUP_BY if groups is None else groups
    data = usage.query(
        since, until, visible, key_id, model, chosen, key_prefix=key_prefix, caller=principal
    )
    (total,) = usage.query(
        since, until, visible, key_id, model, (), key_prefix=key_prefix, caller=principal
    )
    return UsageReportOut(
        start=since,
        end=until,
        group_by=list(chosen),
        filters={name: value for name, value in filters.items() if value is not None},
        data=[usage_group_out(group) for group in data],
        total=usage_group_out(total),
    )
