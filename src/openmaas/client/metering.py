"""Usage reports (JSON or the billing CSV) and the audit log.

Example::

    report = client.usage(start="2024-05-01", group_by=["model"])
    print(report.total.total_tokens)
    page = client.audit(target="models/bert")  # needs an admin key
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from openmaas.client.resource import Resource
from openmaas.protocol.metering import AuditListOut, UsageReportOut


class MeteringResource(Resource):
    """`/v1/usage` and `/v1/audit`."""

    def usage(
        self,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        project: str | None = None,
        key_id: int | None = None,
        key_prefix: str | None = None,
        model: str | None = None,
        group_by: Sequence[str] | None = None,
    ) -> UsageReportOut:
        """Usage totals in [start, end) per group, and overall.

        Defaults: the 30 days before now, grouped by day and model (`group_by` takes any of
        day, project, key, model, route; `[]` gives the totals only). Times without a zone
        are UTC. A key without the `admin` scope sees its own project only.
        """
        params = _metering_params(
            start=start,
            end=end,
            project=project,
            key_id=key_id,
            key_prefix=key_prefix,
            model=model,
            group_by=",".join(group_by) if group_by is not None else None,
        )
        return self._one("GET", "/v1/usage", UsageReportOut, params=params)

    def usage_csv(
        self,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        project: str | None = None,
        key_id: int | None = None,
        key_prefix: str | None = None,
        model: str | None = None,
        group_by: Sequence[str] | None = None,
    ) -> str:
        """The billing CSV: one row per day, project, key and model by default, with the cost
        from the server's price table (OPENMAAS_USAGE_PRICES)."""
        params = _metering_params(
            start=start,
            end=end,
            project=project,
            key_id=key_id,
            key_prefix=key_prefix,
            model=model,
            group_by=",".join(group_by) if group_by is not None else None,
            format="csv",
        )
        return self._request("GET", "/v1/usage", params=params).text

    def audit(
        self,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        actor: str | None = None,
        project: str | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int = 100,
        after_id: int | None = None,
    ) -> AuditListOut:
        """One page of audit events, oldest first (needs an `admin` key). For the next page
        pass the answer's `next_after_id` as `after_id`; it is None on the last page.
        `target="models/bert"` also finds the model's versions and aliases."""
        params = _metering_params(
            start=start,
            end=end,
            actor=actor,
            project=project,
            action=action,
            target=target,
            limit=limit,
            after_id=after_id,
        )
        return self._one("GET", "/v1/audit", AuditListOut, params=params)


def _metering_params(**values: datetime | str | int | None) -> dict[str, str | int]:
    """Query parameters without the unset ones; datetimes as ISO 8601."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in values.items()
        if value is not None
    }
