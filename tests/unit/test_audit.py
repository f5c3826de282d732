"""AuditLog on SQLite and PostgreSQL: append-only events, filters, paging."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.errors import InvalidRequest
from openmaas.metering.audit import AuditLog
from openmaas.store.database import Database


@pytest.fixture
def audit(database_url: str) -> Iterator[AuditLog]:
    db = Database(database_url)
    db.migrate()
    yield AuditLog(db)
    db.close()


class Color(StrEnum):
    RED = "red"


def test_an_event_is_stored_with_every_field(audit: AuditLog) -> None:
    moment = datetime(2024, 5, 1, 12, tzinfo=UTC)
    written_after = datetime.now(UTC)

    event = audit.record(
        "om-ab12cd34",
        "acme",
        "alias.set",
        "models/bert/aliases/production",
        {"version": 1},
        {"version": 2, "at": moment, "kind": Color.RED, "pair": (1, 2)},
        "req-1",
        "10.0.0.7",
    )

    (stored,) = audit.query(caller=SYSTEM)
    assert stored == event
    assert (stored.actor, stored.project, stored.action, stored.target) == (
        "om-ab12cd34",
        "acme",
        "alias.set",
        "models/bert/aliases/production",
    )
    assert stored.before == {"version": 1}
    # Stored as JSON: times as ISO 8601, enums as their value, tuples as lists.
    assert stored.after == {
        "version": 2,
        "at": "2024-05-01T12:00:00Z",
        "kind": "red",
        "pair": [1, 2],
    }
    assert (stored.request_id, stored.client_address) == ("req-1", "10.0.0.7")
    assert stored.created_at.tzinfo is not None
    assert written_after <= stored.created_at <= datetime.now(UTC)


def test_none_means_absent_on_that_side(audit: AuditLog) -> None:
    audit.record("om-a", "p", "model.delete", "models/x", before={"description": ""})
    (event,) = audit.query(caller=SYSTEM)
    assert (event.before, event.after, event.request_id, event.client_address) == (
        {"description": ""},
        None,
        "",
        "",
    )


def test_there_is_no_way_to_change_or_remove_an_event() -> None:
    public = {name for name in dir(AuditLog) if not name.startswith("_")}
    assert public == {"record", "query"}


def test_filters_by_actor_project_action_and_target_subtree(audit: AuditLog) -> None:
    for actor, project, action, target in [
        ("om-a", "acme", "version.register", "models/a_b/versions/1"),
        ("om-a", "acme", "alias.set", "models/a_b/aliases/production"),
        ("om-b", "beta", "model.delete", "models/a_b"),
        ("om-b", "beta", "model.delete", "models/aXb"),  # `_` must not act as a wildcard
        ("om-b", "beta", "model.delete", "models/a_bc"),  # a sibling, not a child
        ("om-c", "acme", "key.revoke", "keys/7"),
    ]:
        audit.record(actor, project, action, target)

    def targets(**filters: str) -> list[str]:
        found = audit.query(**filters, caller=SYSTEM)  # type: ignore[arg-type]
        return [event.target for event in found]

    assert targets(target="models/a_b") == [
        "models/a_b/versions/1",
        "models/a_b/aliases/production",
        "models/a_b",
    ]
    assert targets(target="models/a_b/") == targets(target="models/a_b")
    assert targets(actor="om-a") == ["models/a_b/versions/1", "models/a_b/aliases/production"]
    assert targets(project="acme", action="key.revoke") == ["keys/7"]
    assert targets(action="model.delete", project="acme") == []


def test_pages_follow_after_id_oldest_first(audit: AuditLog) -> None:
    for n in range(7):
        audit.record("om-a", "p", "model.update", f"models/m{n}")

    seen: list[str] = []
    after_id = None
    while page := audit.query(limit=3, after_id=after_id, caller=SYSTEM):
        seen += [event.target for event in page]
        after_id = page[-1].id

    assert seen == [f"models/m{n}" for n in range(7)]


def test_time_window_includes_start_and_excludes_end(audit: AuditLog) -> None:
    first = audit.record("om-a", "p", "model.update", "models/m")
    second = audit.record("om-a", "p", "model.update", "models/m")

    assert audit.query(start=second.created_at, caller=SYSTEM) == [second]
    assert audit.query(end=second.created_at, caller=SYSTEM) == (
        [first] if first.created_at < second.created_at else []
    )
    assert audit.query(start=second.created_at + timedelta(seconds=1), caller=SYSTEM) == []


def test_bad_queries_say_what_to_fix(audit: AuditLog) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidRequest, match="start must be before end"):
        audit.query(start=now, end=now - timedelta(days=1), caller=SYSTEM)
    with pytest.raises(InvalidRequest, match="limit must be at least 1"):
        audit.query(limit=0, caller=SYSTEM)


def test_over_long_fields_are_cut_to_their_column_not_refused(audit: AuditLog) -> None:
    event = audit.record("a" * 500, "p" * 500, "x" * 100, "t" * 1000, request_id="r" * 100)
    assert (len(event.actor), len(event.project), len(event.action)) == (128, 128, 64)
    assert (len(event.target), len(event.request_id)) == (512, 64)
    assert audit.query(caller=SYSTEM) == [event]
