"""Usage metering: one record per request, buffered in memory, written in batches.

The request path only appends to an in-memory buffer (no I/O, no await, a lock held for one
append); a background thread writes batches, each in one transaction, every `flush_s`
seconds or as soon as a batch is full. A write that fails is logged and retried with
backoff; records are only lost when the buffer is full (counted and logged) or when the
database still refuses them at `close()` (logged with the count).

Example::

    recorder = UsageRecorder(db, flush_s=settings.usage_flush_s)
    recorder.start()
    recorder.record(UsageRecord(project="default", route="/v1/embeddings", model="minilm",
                                input_tokens=12, latency_ms=8.5, status=200))
    recorder.flush()  # blocks: never call it on the event loop
    recorder.query(start, end, group_by=("day", "model"), caller=principal)
    recorder.close()  # writes what is still buffered

Recording is the server's own work and takes no caller; every query takes the caller
explicitly (`MissingCaller` without one) and answers only for what that caller may see: its
own project, or any project for an admin.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import (
    ColumnElement,
    RowMapping,
    String,
    case,
    exists,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from openmaas.auth.access import is_admin, require_caller
from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest, ProjectNotFound
from openmaas.store.database import Database
from openmaas.store.tables import ProjectRow, UsageRow

logger = logging.getLogger("openmaas.metering")

BATCH_ROWS = 500  # one transaction; a full batch wakes the writer before flush_s is up
MAX_BUFFERED = 100_000  # about 30 MB of records while the database is unreachable
MAX_RETRY_S = 30.0  # backoff ceiling between attempts to write a failed batch
CLOSE_ATTEMPTS = 3

GROUPS = ("day", "project", "key", "model", "route")
DEFAULT_GROUP_BY = ("day", "model")
# Billing needs the model (prices are per model) and who to bill.
EXPORT_GROUP_BY = ("day", "project", "key", "model")
CSV_COLUMNS = (
    "day",
    "project",
    "key_id",
    "key_prefix",
    "model",
    "route",
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "items",
    "audio_seconds",
    "price_per_1k_tokens",
    "cost",
)
COST_QUANTUM = Decimal("0.000001")


def _now() -> datetime:
    return datetime.now(UTC)


def utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC time; a naive time is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRecord:
    """One metered request: the columns of `usage_records` less the id.

    `input_tokens`/`output_tokens` for text, `items` for inputs without tokens (images,
    classifications), `audio_seconds` for speech; `latency_ms` is the whole request.
    """

    created_at: datetime = field(default_factory=_now)
    project: str
    key_id: int | None = None
    key_prefix: str = ""
    model: str = ""
    version: int | None = None
    route: str
    input_tokens: int = 0
    output_tokens: int = 0
    items: int = 0
    audio_seconds: float = 0.0
    latency_ms: float
    status: int
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """The totals of one group. A dimension not grouped by is None."""

    day: date | None
    project: str | None
    key_id: int | None
    key_prefix: str | None
    model: str | None
    route: str | None
    requests: int
    errors: int  # status >= 400
    input_tokens: int
    output_tokens: int
    items: int
    audio_seconds: float
    latency_ms_mean: float
    latency_ms_max: float

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


_FIELDS = tuple(f.name for f in fields(UsageRecord))
_COPY_SQL = f"COPY {UsageRow.__tablename__} ({', '.join(_FIELDS)}) FROM STDIN"
# Truncated before the insert: one over-long value must not make a whole batch fail forever.
_STRING_LIMITS = {
    column.name: column.type.length
    for column in UsageRow.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


def _row(record: UsageRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _FIELDS}
    # SQLite keeps no zone: every stored time is UTC, so day buckets are UTC days.
    row["created_at"] = utc(record.created_at)
    for name, limit in _STRING_LIMITS.items():
        row[name] = row[name][:limit]
    return row


def _is_bad_data(exc: Exception) -> bool:
    """A value the database refuses (retrying cannot help), not an unreachable database."""
    # pysqlite raises OverflowError/TypeError itself for a value it cannot bind; COPY raises
    # psycopg's own errors, which SQLAlchemy does not wrap.
    if isinstance(exc, DataError | IntegrityError | OverflowError | TypeError | ValueError):
        return True
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def check_group_by(group_by: Iterable[str]) -> tuple[str, ...]:
    """The grouping dimensions in canonical order; unknown ones raise InvalidRequest."""
    wanted = set()
    for name in group_by:
        if name not in GROUPS:
            raise InvalidRequest(
                f"unknown group_by {name!r}: use any of {', '.join(GROUPS)} (comma-separated)",
                param="group_by",
            )
        wanted.add(name)
    return tuple(name for name in GROUPS if name in wanted)


def check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = utc(start), utc(end)
    if start >= end:
        raise InvalidRequest(
            f"start ({start.isoformat()}) must be before end ({end.isoformat()})", param="start"
        )
    return start, end


class UsageRecorder:
    """Buffers usage records and writes them in batches from a background thread.

    `record()` is safe to call on the event loop; `flush()`, `query()`, `export_csv()` and
    `close()` do database I/O and belong in a worker thread.
    """

    def __init__(
        self,
        db: Database,
        flush_s: float,
        *,
        batch_rows: int = BATCH_ROWS,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.db = db
        self.flush_s = flush_s
        self.batch_rows = batch_rows
        self.max_buffered = max_buffered
        self._buffer: deque[UsageRecord] = deque()
        self._lock = threading.Lock()  # guards _buffer, _dropped, _closed
        self._write_lock = threading.Lock()  # one writer at a time: thread, flush(), close()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dropped = 0  # since the last report
        self.dropped_total = 0

    # -- recording ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def record(self, record: UsageRecord) -> None:
        """Buffer one record; never blocks on I/O. Dropped (and counted) when the buffer is
        full or the recorder is closed."""
        with self._lock:
            if self._closed or len(self._buffer) >= self.max_buffered:
                self._dropped += 1
                self.dropped_total += 1
                return
            self._buffer.append(record)
            full = len(self._buffer) >= self.batch_rows
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Records buffered and not yet written."""
        return len(self._buffer)

    def flush(self) -> None:
        """Write everything buffered now, in batches. Blocks; raises if the database fails
        (the unwritten records stay buffered for the next attempt)."""
        with self._write_lock:
            while batch := self._take():
                pending = deque(batch)
                try:
                    self._write(pending)
                except Exception:
                    with self._lock:
                        self._buffer.extendleft(reversed(pending))
                    raise

    def close(self) -> None:
        """Stop the writer and write what is left; records after this are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for attempt in range(1, CLOSE_ATTEMPTS + 1):
            try:
                self.flush()
                break
            except Exception:
                logger.exception("writing usage records at shutdown failed (%d)", attempt)
                if attempt < CLOSE_ATTEMPTS:
                    time.sleep(0.5 * attempt)  # a database restarting under us
        else:
            logger.error("%d usage records were not written and are lost", self.pending)
        self._report_dropped()

    def _take(self) -> list[UsageRecord]:
        with self._lock:
            count = min(self.batch_rows, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    def _write(self, pending: deque[UsageRecord]) -> None:
        """Write `pending` in one transaction, removing from it what is done; on failure
        what is left in it was not written."""
        rows = [_row(record) for record in pending]
        try:
            with self.db.transaction() as session:
                self._insert(session, rows)
        except Exception as exc:
            if not _is_bad_data(exc):
                raise
        else:
            pending.clear()
            return
        # Keep every good row of a batch that holds a bad one; the bad ones are logged whole,
        # so they can still be billed by hand.
        for row in rows:
            try:
                with self.db.transaction() as session:
                    self._insert(session, [row])
            except Exception as exc:
                if not _is_bad_data(exc):
                    raise
                logger.error("usage record refused by the database, dropped: %r (%s)", row, exc)
            pending.popleft()

    def _insert(self, session: Session, rows: list[dict[str, Any]]) -> None:
        if self.db.is_sqlite:
            session.execute(insert(UsageRow), rows)
            return
        # COPY writes about 5x the rows per second of SQLAlchemy's multi-row INSERT (47k vs
        # 10k, measured), and this thread shares the GIL with the event loop.
        driver = session.connection().connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:
            for row in rows:
                copy.write_row(tuple(row[name] for name in _FIELDS))

    def _run(self) -> None:
        timeout = self.flush_s
        failures = 0
        retry_at = 0.0
        while not self._closed:
            self._wake.wait(timeout)
            self._wake.clear()
            if self._closed:
                return  # close() writes the rest itself
            now = time.monotonic()
            if now < retry_at:  # woken by a full batch while backing off
                timeout = retry_at - now
                continue
            try:
                self.flush()
            except Exception:
                failures += 1
                timeout = min(self.flush_s * 2**failures, MAX_RETRY_S)
                retry_at = time.monotonic() + timeout
                logger.exception(
                    "writing usage records failed; %d buffered, retrying in %.1f s",
                    self.pending,
                    timeout,
                )
            else:
                failures, timeout, retry_at = 0, self.flush_s, 0.0
            self._report_dropped()

    def _report_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            logger.error(
                "dropped %d usage records: the buffer was full (%d) or the recorder closed",
                dropped,
                self.max_buffered,
            )

    # -- queries --------------------------------------------------------------------------

    def query(
        self,
        start: datetime,
        end: datetime,
        project: str | None = None,
        key_id: int | None = None,
        model: str | None = None,
        group_by: Iterable[str] = DEFAULT_GROUP_BY,
        *,
        key_prefix: str | None = None,
        caller: Principal,
    ) -> list[UsageTotals]:
        """Totals per group of the caller's records in [start, end), aggregated in SQL.

        Days are UTC days. With no `group_by` the answer is one row (zeros when empty).
        """
        project = _tenant_filter(caller, project)
        groups = check_group_by(group_by)
        start, end = check_window(start, end)
        dimensions = self._dimensions(groups)
        errors = case((UsageRow.status >= 400, 1), else_=0)
        statement = (
            select(
                *dimensions,
                func.count().label("requests"),
                func.coalesce(func.sum(errors), 0).label("errors"),
                func.coalesce(func.sum(UsageRow.input_tokens), 0).label("input_tokens"),
                func.coalesce(func.sum(UsageRow.output_tokens), 0).label("output_tokens"),
                func.coalesce(func.sum(UsageRow.items), 0).label("items"),
                func.coalesce(func.sum(UsageRow.audio_seconds), 0.0).label("audio_seconds"),
                func.coalesce(func.avg(UsageRow.latency_ms), 0.0).label("latency_ms_mean"),
                func.coalesce(func.max(UsageRow.latency_ms), 0.0).label("latency_ms_max"),
            )
            .where(UsageRow.created_at >= start, UsageRow.created_at < end)
            .group_by(*dimensions)
        )
        if project is not None:
            statement = statement.where(UsageRow.project == project)
        if key_id is not None:
            statement = statement.where(UsageRow.key_id == key_id)
        if key_prefix is not None:
            statement = statement.where(UsageRow.key_prefix == key_prefix)
        if model is not None:
            statement = statement.where(UsageRow.model == model)
        with self.db.transaction() as session:
            rows = session.execute(statement).mappings().all()
        # Sorted here, not in SQL: collations and NULL order differ between the databases.
        return sorted((_totals(row) for row in rows), key=_sort_key)

    def export_csv(
        self,
        start: datetime,
        end: datetime,
        prices: Mapping[str, float],
        project: str | None = None,
        key_id: int | None = None,
        model: str | None = None,
        group_by: Iterable[str] = EXPORT_GROUP_BY,
        *,
        key_prefix: str | None = None,
        caller: Principal,
    ) -> str:
        """The billing CSV (columns `CSV_COLUMNS`): always grouped by model at least.

        cost = (input + output tokens) / 1000 * prices[model]; both cells are empty for a
        model without a price, so a missing price shows instead of billing zero.
        """
        groups = (*group_by, "model")
        totals = self.query(
            start, end, project, key_id, model, groups, key_prefix=key_prefix, caller=caller
        )
        return render_csv(totals, prices)

    def visible_project(self, project: str | None, *, caller: Principal) -> str | None:
        """The project filter `caller` may apply (None: every project, admins only).

        Another project, for a non-admin, and a project that never existed, for an admin,
        are both `ProjectNotFound`: the same answer, so names cannot be probed.
        """
        visible = _tenant_filter(caller, project)
        if visible is not None and is_admin(caller) and not self.knows_project(visible):
            raise ProjectNotFound(f"project {visible!r} not found", param="project")
        return visible

    def knows_project(self, name: str) -> bool:
        """The project exists, or existed: usage of a deleted project can still be billed."""
        with self.db.transaction() as session:
            return bool(
                session.scalar(
                    select(
                        exists().where(ProjectRow.name == name)
                        | exists().where(UsageRow.project == name)
                    )
                )
            )

    def _dimensions(self, groups: Sequence[str]) -> list[ColumnElement[Any]]:
        columns: list[ColumnElement[Any]] = []
        for name in groups:
            if name == "day":
                columns.append(self._day().label("day"))
            elif name == "key":
                columns += [
                    UsageRow.key_id.label("key_id"),
                    UsageRow.key_prefix.label("key_prefix"),
                ]
            else:
                columns.append(getattr(UsageRow, name).label(name))
        return columns

    def _day(self) -> ColumnElement[str]:
        """'YYYY-MM-DD' of the UTC day. Constants are inlined, not bound: PostgreSQL
        matches GROUP BY expressions textually, and two parameters never match."""
        if self.db.is_sqlite:
            return func.substr(UsageRow.created_at, 1, 10)  # stored as 'YYYY-MM-DD HH:MM:SS'
        in_utc = func.timezone(literal_column("'UTC'"), UsageRow.created_at)
        return func.to_char(in_utc, literal_column("'YYYY-MM-DD'"))


def _tenant_filter(caller: Principal, project: str | None) -> str | None:
    who = require_caller(caller)
    if is_admin(who):
        return project
    if project is not None and project != who.project:
        # The same answer as for a project that does not exist: no probing names.
        raise ProjectNotFound(f"project {project!r} not found", param="project")
    return who.project


def _totals(row: RowMapping) -> UsageTotals:
    day = row.get("day")
    return UsageTotals(
        day=date.fromisoformat(day) if day else None,
        project=row.get("project"),
        key_id=row.get("key_id"),
        key_prefix=row.get("key_prefix"),
        model=row.get("model"),
        route=row.get("route"),
        requests=int(row["requests"]),
        errors=int(row["errors"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        items=int(row["items"]),
        audio_seconds=float(row["audio_seconds"]),
        latency_ms_mean=float(row["latency_ms_mean"]),
        latency_ms_max=float(row["latency_ms_max"]),
    )


def _sort_key(t: UsageTotals) -> tuple[Any, ...]:
    return (
        t.day or date.min,
        t.project or "",
        t.key_id is not None,
        t.key_id or 0,
        t.key_prefix or "",
        t.model or "",
        t.route or "",
    )


def cost_of(totals: UsageTotals, prices: Mapping[str, float]) -> Decimal | None:
    """What a group costs at `prices` (per 1000 tokens, input and output alike)."""
    if totals.model is None or totals.model not in prices:
        return None
    # Decimal from the printed price: 0.1 must stay 0.1, not 0.1000000000000000055...
    price = Decimal(str(prices[totals.model]))
    return (price * totals.total_tokens / 1000).quantize(COST_QUANTUM)


def render_csv(totals: Iterable[UsageTotals], prices: Mapping[str, float]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: CRLF line ends, quotes where needed
    writer.writerow(CSV_COLUMNS)
    for group in totals:
        cost = cost_of(group, prices)
        price = prices.get(group.model) if group.model is not None else None
        writer.writerow(
            (
                "" if group.day is None else group.day.isoformat(),
                _cell(group.project),
                _cell(group.key_id),
                _cell(group.key_prefix),
                _cell(group.model),
                _cell(group.route),
                group.requests,
                group.errors,
                group.input_tokens,
                group.output_tokens,
                group.total_tokens,
                group.items,
                f"{group.audio_seconds:.3f}",
                "" if price is None else str(Decimal(str(price))),
                "" if cost is None else f"{cost:f}",
            )
        )
    return buffer.getvalue()


def _cell(value: object) -> str:
    return "" if value is None else str(value)
