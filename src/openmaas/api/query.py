"""Query-string values the admin routes share: timestamps and comma-separated lists.

Example::

    since = parse_timestamp("2024-05-01", "start")  # 2024-05-01T00:00:00+00:00
    split_list(["day,model", "route"])  # ["day", "model", "route"]
"""

from __future__ import annotations

from datetime import UTC, datetime

from openmaas.errors import InvalidRequest

TIMESTAMP_HINT = "use ISO 8601, e.g. 2024-05-01 or 2024-05-01T12:00:00Z (no zone means UTC)"


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
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-01:00 is in the year 10000 in UTC
        raise InvalidRequest(
            f"{param}: {value!r} is outside the years 1 to 9999 in UTC", param=param
        ) from None


def split_list(values: list[str] | None) -> list[str]:
    """`?group_by=day,model` and `?group_by=day&group_by=model` alike."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
