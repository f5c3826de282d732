"""UsageRecorder on SQLite and PostgreSQL: totals equal what was recorded, UTC day buckets,
the billing CSV, and a buffer that is bounded, flushed on close and never silently lost."""

from __future__ import annotations

import csv
import io
import logging
import random
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from openmaas.auth.entities import SYSTEM
from openmaas.errors import InvalidRequest
from openmaas.metering.usage import (
    CSV_COLUMNS,
    UsageRecord,
    UsageRecorder,
    UsageTotals,
)
from openmaas.store.database import Database
from openmaas.store.tables import UsageRow

START = datetime(2024, 4, 1, tzinfo=UTC)
END = datetime(2024, 6, 1, tzinfo=UTC)
NEVER_S = 3600.0  # a flush interval no test waits for
WAIT_S = 10.0  # generous bound on an event a background thread sets at once


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def recorder(db: Database) -> Iterator[UsageRecorder]:
    usage = UsageRecorder(db, flush_s=NEVER_S)
    yield usage
    usage.close()


def stored_rows(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(UsageRow)) or 0)


def record(**fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "created_at": datetime(2024, 5, 1, 12, tzinfo=UTC),
        "project": "acme",
        "route": "/v1/embeddings",
        "latency_ms": 10.0,
        "status": 200,
        **fields,
    }
    return UsageRecord(**values)


def random_records(count: int, seed: int) -> list[UsageRecord]:
    rng = random.Random(seed)
    keys = [(1, "aaaa1111"), (2, "bbbb2222"), (None, "")]
    # Three days, with times close to both UTC midnights.
    moments = [
        datetime(2024, 5, 1, 0, 0, tzinfo=UTC),
        datetime(2024, 5, 1, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 5, 2, 0, 0, tzinfo=UTC),
        datetime(2024, 5, 2, 13, 7, tzinfo=UTC),
        datetime(2024, 5, 3, 23, 0, tzinfo=timezone(timedelta(hours=-5))),  # 4 May UTC
    ]
    records = []
    for _ in range(count):
        key_id, prefix = rng.choice(keys)
        records.append(
            UsageRecord(
                created_at=rng.choice(moments),
                project=rng.choice(["acme", "beta"]),
                key_id=key_id,
                key_prefix=prefix,
                model=rng.choice(["minilm", "whisper", ""]),
                version=rng.choice([1, 2, None]),
                route=rng.choice(["/v1/embeddings", "/v1/audio/transcriptions"]),
                input_tokens=rng.randrange(0, 5000),
                output_tokens=rng.randrange(0, 500),
                items=rng.randrange(0, 8),
                # Binary fractions: sums are exact whatever order the database adds them in.
                audio_seconds=rng.randrange(0, 400) / 4,
                latency_ms=rng.randrange(1, 4000) / 2,
                status=rng.choice([200, 200, 200, 201, 400, 404, 429, 500]),
            )
        )
    return records


def expected_totals(
    records: list[UsageRecord], key: Callable[[UsageRecord], tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, float]]:
    groups: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        g = groups[key(r)]
        g["requests"] += 1
        g["errors"] += r.status >= 400
        g["input_tokens"] += r.input_tokens
        g["output_tokens"] += r.output_tokens
        g["items"] += r.items
        g["audio_seconds"] += r.audio_seconds
        g["latency_sum"] += r.latency_ms
        g["latency_ms_max"] = max(g["latency_ms_max"], r.latency_ms)
    return groups


def utc_day(r: UsageRecord) -> date:
    return r.created_at.astimezone(UTC).date()


GROUPINGS: dict[tuple[str, ...], Callable[[UsageRecord], tuple[Any, ...]]] = {
    (): lambda r: (),
    ("day", "model"): lambda r: (utc_day(r), r.model),
    ("project", "key"): lambda r: (r.project, r.key_id, r.key_prefix),
    ("route",): lambda r: (r.route,),
    ("day", "project", "key", "model", "route"): lambda r: (
        utc_day(r),
        r.project,
        r.key_id,
        r.key_prefix,
        r.model,
        r.route,
    ),
}


def group_key(t: UsageTotals, group_by: tuple[str, ...]) -> tuple[Any, ...]:
    parts: list[Any] = []
    for name in group_by:
        if name == "key":
            parts += [t.key_id, t.key_prefix]
        else:
            parts.append(getattr(t, name))
    return tuple(parts)


# -- totals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("group_by", list(GROUPINGS), ids=lambda g: ",".join(g) or "none")
def test_totals_equal_exactly_what_was_recorded(
    recorder: UsageRecorder, group_by: tuple[str, ...]
) -> None:
    records = random_records(1500, seed=7)  # three batches of 500
    for r in records:
        recorder.record(r)
    recorder.flush()
    assert recorder.pending == 0

    got = recorder.query(START, END, group_by=group_by, caller=SYSTEM)

    want = expected_totals(records, GROUPINGS[group_by])
    assert {group_key(t, group_by) for t in got} == set(want)
    for t in got:
        w = want[group_key(t, group_by)]
        assert (t.requests, t.errors) == (w["requests"], w["errors"])
        assert (t.input_tokens, t.output_tokens, t.items) == (
            w["input_tokens"],
            w["output_tokens"],
            w["items"],
        )
        assert t.total_tokens == w["input_tokens"] + w["output_tokens"]
        assert t.audio_seconds == w["audio_seconds"]
        assert t.latency_ms_max == w["latency_ms_max"]
        assert t.latency_ms_mean == pytest.approx(w["latency_sum"] / w["requests"])
    if not group_by:
        assert got[0].requests == len(records)


def test_an_empty_window_totals_zero(recorder: UsageRecorder) -> None:
    (total,) = recorder.query(START, END, group_by=(), caller=SYSTEM)
    assert (total.requests, total.errors, total.input_tokens, total.latency_ms_mean) == (0, 0, 0, 0)
    assert recorder.query(START, END, group_by=("day",), caller=SYSTEM) == []


def test_days_are_utc_days_split_at_midnight(recorder: UsageRecorder) -> None:
    plus_two = timezone(timedelta(hours=2))
    for moment in (
        datetime(2024, 5, 1, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 5, 2, 1, 30, tzinfo=plus_two),  # 23:30 on 1 May in UTC
        datetime(2024, 5, 1, 23, 59, 59),  # no zone: taken as UTC
        datetime(2024, 5, 2, 0, 0, tzinfo=UTC),
        datetime(2024, 5, 2, 0, 30, tzinfo=UTC),
    ):
        recorder.record(record(created_at=moment))
    recorder.flush()

    days = {t.day: t.requests for t in recorder.query(START, END, group_by=("day",), caller=SYSTEM)}

    assert days == {date(2024, 5, 1): 3, date(2024, 5, 2): 2}


def test_the_window_includes_start_and_excludes_end(recorder: UsageRecorder) -> None:
    midnight = datetime(2024, 5, 2, tzinfo=UTC)
    for moment in (midnight - timedelta(microseconds=1), midnight, midnight + timedelta(days=1)):
        recorder.record(record(created_at=moment))
    recorder.flush()

    (total,) = recorder.query(midnight, midnight + timedelta(days=1), group_by=(), caller=SYSTEM)
    assert total.requests == 1
    # The same instant written in another zone selects the same records.
    (same,) = recorder.query(
        datetime(2024, 5, 2, 2, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 3, 2, tzinfo=timezone(timedelta(hours=2))),
        group_by=(),
        caller=SYSTEM,
    )
    assert same.requests == 1


def test_filters_narrow_by_project_key_and_model(recorder: UsageRecorder) -> None:
    records = random_records(400, seed=3)
    for r in records:
        recorder.record(r)
    recorder.flush()

    def count(**filters: Any) -> int:
        (total,) = recorder.query(START, END, group_by=(), **filters, caller=SYSTEM)
        return total.requests

    assert count(project="acme") == sum(r.project == "acme" for r in records)
    assert count(key_id=2) == sum(r.key_id == 2 for r in records)
    assert count(key_prefix="aaaa1111") == sum(r.key_prefix == "aaaa1111" for r in records)
    assert count(project="beta", model="minilm") == sum(
        r.project == "beta" and r.model == "minilm" for r in records
    )
    assert count(project="nobody") == 0


def test_bad_group_by_and_window_say_what_to_fix(recorder: UsageRecorder) -> None:
    with pytest.raises(InvalidRequest, match="unknown group_by 'week': use any of day, project"):
        recorder.query(START, END, group_by=("day", "week"), caller=SYSTEM)
    with pytest.raises(InvalidRequest, match="must be before end"):
        recorder.query(END, START, caller=SYSTEM)
    with pytest.raises(InvalidRequest, match="must be before end"):
        recorder.query(START, START, caller=SYSTEM)


def test_knows_projects_that_exist_or_have_usage(recorder: UsageRecorder) -> None:
    recorder.record(record(project="gone"))
    recorder.flush()
    assert recorder.knows_project("default")  # created by the migrations
    assert recorder.knows_project("gone")
    assert not recorder.knows_project("never")


# -- the billing CSV ------------------------------------------------------------------------


def test_csv_has_fixed_columns_and_costs_from_the_price_table(recorder: UsageRecorder) -> None:
    recorder.record(record(model="big", input_tokens=1000, output_tokens=500, key_id=4))
    recorder.record(record(model="big", input_tokens=200, status=500, key_id=4))
    recorder.record(record(model="small", input_tokens=3))
    recorder.record(record(model="unpriced", input_tokens=10_000))
    recorder.record(record(model="big", project="other", input_tokens=7))
    recorder.flush()

    text = recorder.export_csv(
        START, END, {"big": 0.5, "small": 0.1}, project="acme", caller=SYSTEM
    )

    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert text.endswith("\r\n")  # RFC 4180 line ends
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {"big", "small", "unpriced"}  # the filter kept "other" out
    big = rows["big"]
    assert big["day"] == "2024-05-01"
    assert (big["project"], big["key_id"], big["model"], big["route"]) == ("acme", "4", "big", "")
    assert (big["requests"], big["errors"], big["total_tokens"]) == ("2", "1", "1700")
    assert (big["price_per_1k_tokens"], big["cost"]) == ("0.5", "0.850000")
    # 3 tokens at 0.1 per 1000, exactly: no binary floating point noise.
    assert rows["small"]["cost"] == "0.000300"
    assert (rows["unpriced"]["price_per_1k_tokens"], rows["unpriced"]["cost"]) == ("", "")


def test_csv_is_always_grouped_by_model(recorder: UsageRecorder) -> None:
    recorder.record(record(model="a", input_tokens=1000))
    recorder.record(record(model="b", input_tokens=1000))
    recorder.flush()

    text = recorder.export_csv(
        START, END, {"a": 1.0, "b": 2.0}, group_by=("project",), caller=SYSTEM
    )

    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["model"], r["day"], r["cost"]) for r in rows] == [
        ("a", "", "1.000000"),
        ("b", "", "2.000000"),
    ]


# -- the buffer and the writer --------------------------------------------------------------


def spy_writes(recorder: UsageRecorder, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set after each batch the recorder writes."""
    written = threading.Event()
    original = recorder._write

    def write(pending: deque[UsageRecord]) -> None:
        original(pending)
        written.set()

    monkeypatch.setattr(recorder, "_write", write)
    return written


def fail_transactions(db: Database, monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """Make the next `times` transactions fail as an unreachable database does."""
    calls = [0]
    original = db.transaction

    def transaction() -> Any:
        calls[0] += 1
        if calls[0] <= times:
            raise OperationalError("INSERT", {}, Exception("could not connect to server"))
        return original()

    monkeypatch.setattr(db, "transaction", transaction)
    return calls


def test_record_never_touches_the_database(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = UsageRecorder(db, flush_s=NEVER_S)
    calls = fail_transactions(db, monkeypatch, times=10**9)
    for _ in range(1000):
        usage.record(record())
    assert (calls[0], usage.pending) == (0, 1000)
    monkeypatch.undo()
    usage.close()
    assert stored_rows(db) == 1000


def test_close_writes_everything_still_buffered(db: Database) -> None:
    usage = UsageRecorder(db, flush_s=NEVER_S, batch_rows=10_000)
    usage.start()
    for _ in range(1234):
        usage.record(record())
    assert stored_rows(db) == 0

    usage.close()

    assert (stored_rows(db), usage.pending) == (1234, 0)


def test_a_full_batch_is_written_without_waiting_for_the_interval(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = UsageRecorder(db, flush_s=NEVER_S, batch_rows=10)
    written = spy_writes(usage, monkeypatch)
    usage.start()
    try:
        for _ in range(9):
            usage.record(record())
        assert not written.is_set()
        usage.record(record())
        assert written.wait(WAIT_S)
        assert stored_rows(db) == 10
    finally:
        usage.close()


def test_the_writer_flushes_every_interval(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = UsageRecorder(db, flush_s=0.05)
    written = spy_writes(usage, monkeypatch)
    usage.start()
    try:
        usage.record(record())
        assert written.wait(WAIT_S)
        assert stored_rows(db) == 1
    finally:
        usage.close()


def test_a_failed_flush_keeps_the_records(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = UsageRecorder(db, flush_s=NEVER_S)
    for _ in range(3):
        usage.record(record())
    fail_transactions(db, monkeypatch, times=1)

    with pytest.raises(OperationalError):
        usage.flush()
    assert usage.pending == 3

    usage.flush()
    assert (usage.pending, stored_rows(db)) == (0, 3)
    usage.close()


def test_the_writer_retries_a_failed_write_and_logs_it(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    usage = UsageRecorder(db, flush_s=0.01)
    fail_transactions(db, monkeypatch, times=2)
    written = spy_writes(usage, monkeypatch)
    usage.start()
    try:
        with caplog.at_level(logging.ERROR, logger="openmaas.metering"):
            for _ in range(5):
                usage.record(record())
            assert written.wait(WAIT_S)
        assert stored_rows(db) == 5
        failures = [r for r in caplog.records if "writing usage records failed" in r.message]
        assert len(failures) == 2
        assert "retrying in" in failures[0].message
    finally:
        usage.close()


def test_the_buffer_is_bounded_and_overflow_is_counted_and_logged(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    usage = UsageRecorder(db, flush_s=NEVER_S, max_buffered=5)
    for _ in range(8):
        usage.record(record())
    assert (usage.pending, usage.dropped_total) == (5, 3)

    with caplog.at_level(logging.ERROR, logger="openmaas.metering"):
        usage.close()

    assert stored_rows(db) == 5
    assert any("dropped 3 usage records" in r.message for r in caplog.records)


def test_records_after_close_are_dropped_and_counted(db: Database) -> None:
    usage = UsageRecorder(db, flush_s=NEVER_S)
    usage.close()
    usage.record(record())
    assert (usage.pending, usage.dropped_total) == (0, 1)


def test_one_bad_record_does_not_sink_its_batch(
    recorder: UsageRecorder, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.record(record(key_id=1))
    recorder.record(record(key_id=2**70))  # no database column holds this
    recorder.record(record(key_id=3, project="p" * 500))  # truncated to the column's 128

    with caplog.at_level(logging.ERROR, logger="openmaas.metering"):
        recorder.flush()

    with db.transaction() as session:
        stored = session.execute(select(UsageRow.key_id, UsageRow.project)).all()
    assert sorted(stored) == [(1, "acme"), (3, "p" * 128)]
    assert any("refused by the database" in r.message for r in caplog.records)


def test_a_failure_part_way_through_a_bad_batch_neither_loses_nor_repeats(
    recorder: UsageRecorder, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key_id in (1, 2**70, 3, 4):
        recorder.record(record(key_id=key_id))
    calls = [0]
    original = db.transaction

    def transaction() -> Any:
        # 1: the batch (refused for the bad row), 2-3: rows one by one, 4: the line drops.
        calls[0] += 1
        if calls[0] == 4:
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return original()

    monkeypatch.setattr(db, "transaction", transaction)
    with pytest.raises(OperationalError):
        recorder.flush()
    assert recorder.pending == 2

    recorder.flush()

    with db.transaction() as session:
        assert sorted(session.scalars(select(UsageRow.key_id)), key=str) == [1, 3, 4]
