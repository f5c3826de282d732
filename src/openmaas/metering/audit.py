"""The audit log: one append-only row per mutating admin action.

Admin actions are rare, so each event is written at once in its own transaction. There is
no update or delete: nothing in the code base can rewrite history through this class.

Example::

    audit = AuditLog(db)
    audit.record(
        actor="om-ab12cd34", project="default", action="alias.set",
        target="models/bert/aliases/production",
        before={"version": 1}, after={"version": 2, "reason": "better F1"},
        request_id="4f0c...", client_address="10.0.0.7",
    )
    page = audit.query(action="alias.set", limit=50, caller=admin)

Writing is the server's own work and takes no caller; reading takes an explicit admin
caller (`MissingCaller` without one, `PermissionDenied` for any other key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import String, or_, select

from openmaas.auth.access import require_admin
from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest
from openmaas.metering.usage import utc
from openmaas.store.database import Database
from openmaas.store.tables import AuditRow

_STRING_LIMITS = {
    column.name: column.type.length
    for column in AuditRow.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    created_at: datetime
    actor: str  # the key's public prefix, e.g. om-ab12cd34
    project: str
    action: str  # noun.verb: version.register, alias.rollback, key.revoke, ...
    target: str  # a resource path: models/bert/versions/2, keys/7, projects/acme
    before: dict[str, Any] | None  # None: the target did not exist before
    after: dict[str, Any] | None  # None: the target no longer exists
    request_id: str
    client_address: str


class AuditLog:
    """Append and read audit events; there is deliberately no way to change one."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        actor: str,
        project: str,
        action: str,
        target: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        request_id: str = "",
        client_address: str = "",
    ) -> AuditEvent:
        """Write one event now, in its own transaction (blocks: not on the event loop).

        `before`/`after` may hold datetimes, enums or tuples: they are stored as JSON.
        """
        values = {
            "actor": actor,
            "project": project,
            "action": action,
            "target": target,
            "request_id": request_id,
            "client_address": client_address,
        }
        for name, limit in _STRING_LIMITS.items():
            if name in values:
                values[name] = values[name][:limit]
        row = AuditRow(
            created_at=datetime.now(UTC),
            before=_json_object(before),
            after=_json_object(after),
            **values,
        )
        with self.db.transaction() as session:
            session.add(row)
            session.flush()
            return _event(row)

    def query(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        actor: str | None = None,
        project: str | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int = 100,
        after_id: int | None = None,
        *,
        caller: Principal,
    ) -> list[AuditEvent]:
        """Events oldest first, in [start, end), after the event `after_id` (for paging).
        Only admins read the audit log.

        `target` matches that target and everything under it: `models/bert` also finds
        `models/bert/versions/2`.
        """
        require_admin(caller)
        if limit < 1:
            raise InvalidRequest("limit must be at least 1", param="limit")
        statement = select(AuditRow).order_by(AuditRow.id).limit(limit)
        if start is not None and end is not None and utc(start) >= utc(end):
            raise InvalidRequest("start must be before end", param="start")
        if start is not None:
            statement = statement.where(AuditRow.created_at >= utc(start))
        if end is not None:
            statement = statement.where(AuditRow.created_at < utc(end))
        if actor is not None:
            statement = statement.where(AuditRow.actor == actor)
        if project is not None:
            statement = statement.where(AuditRow.project == project)
        if action is not None:
            statement = statement.where(AuditRow.action == action)
        if target is not None:
            base = target.rstrip("/")
            statement = statement.where(
                or_(
                    AuditRow.target == base, AuditRow.target.startswith(base + "/", autoescape=True)
                )
            )
        if after_id is not None:
            statement = statement.where(AuditRow.id > after_id)
        with self.db.transaction() as session:
            return [_event(row) for row in session.scalars(statement)]


def _json_object(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    converted: dict[str, Any] = to_jsonable_python(dict(value))
    return converted


def _event(row: AuditRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        created_at=utc(row.created_at),
        actor=row.actor,
        project=row.project,
        action=row.action,
        target=row.target,
        before=row.before,
        after=row.after,
        request_id=row.request_id,
        client_address=row.client_address,
    )
