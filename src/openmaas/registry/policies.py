"""Alias policies: an evaluation gate on an alias. Every move of the alias (the API, the CLI,
a job's `alias`, a registration's `alias`, a traffic promotion) first scores the candidate and
the alias's current version on the policy's file, and is refused (409 `gate_failed`) when the
candidate's `metric` is below the current one's plus `min_delta`. Rolling back is never
gated: it returns to a version the alias already had. An admin may force a move with a reason.

The registry keeps the policies and calls the gate (`AliasService.gate`, a callable the
server and the job worker set: `evaluation.gate.AliasGate`); scoring lives outside it.

Example::

    policies = PolicyService(store)
    policies.set("sentiment", "production", AliasPolicy("file-1a2b", "macro_f1", 0.0),
                 caller=principal)
    policies.find("sentiment", "production", caller=SYSTEM)  # the policy, or None
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.auth.access import require_caller
from openmaas.auth.entities import Principal
from openmaas.errors import NotFound
from openmaas.registry import rows
from openmaas.registry.names import check_alias, split_qualified
from openmaas.registry.store import RegistryStore
from openmaas.store.tables import AliasPolicyRow, ModelRow


@dataclass(frozen=True, slots=True)
class AliasPolicy:
    eval_file: str  # a labelled file of the model's task
    metric: str  # a metric of the evaluation report (accuracy, macro_f1, entity_f1, ...)
    min_delta: float = 0.0  # the candidate must score at least current + min_delta


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    project: str
    model: str
    alias: str
    policy: AliasPolicy
    created_by: str
    created_at: datetime


class PolicyService:
    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def set(
        self, name: str, alias: str, policy: AliasPolicy, *, caller: Principal
    ) -> tuple[StoredPolicy | None, StoredPolicy]:
        """Set (or replace) the alias's gate; returns (the one replaced, the new one)."""
        who = require_caller(caller)
        check_alias(alias)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who, lock=True, change=True)
            row = _row(session, model, alias)
            before = _entity(model, row) if row is not None else None
            if row is None:
                row = AliasPolicyRow(model_id=model.id, alias=alias)
                session.add(row)
            row.eval_file = policy.eval_file
            row.metric = policy.metric
            row.min_delta = policy.min_delta
            row.created_by = who.actor
            row.created_at = rows.now()
            session.flush()
            after = _entity(model, row)
        self.store.changed(split_qualified(name)[1])
        return before, after

    def find(self, name: str, alias: str, *, caller: Principal) -> StoredPolicy | None:
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who)
            row = _row(session, model, alias)
            return _entity(model, row) if row is not None else None

    def of_model(self, name: str, *, caller: Principal) -> list[StoredPolicy]:
        """Every gate of the model's aliases, by alias (none: an empty list)."""
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who)
            found = session.scalars(
                select(AliasPolicyRow)
                .where(AliasPolicyRow.model_id == model.id)
                .order_by(AliasPolicyRow.alias)
            ).all()
            return [_entity(model, row) for row in found]

    def get(self, name: str, alias: str, *, caller: Principal) -> StoredPolicy:
        found = self.find(name, alias, caller=caller)
        if found is None:
            raise NotFound(
                f"alias {alias!r} of {name!r} has no policy", param="alias", code="no_policy"
            )
        return found

    def delete(self, name: str, alias: str, *, caller: Principal) -> StoredPolicy:
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who, lock=True, change=True)
            row = _row(session, model, alias)
            if row is None:
                raise NotFound(
                    f"alias {alias!r} of {name!r} has no policy", param="alias", code="no_policy"
                )
            removed = _entity(model, row)
            session.delete(row)
        return removed


def _row(session: Session, model: ModelRow, alias: str) -> AliasPolicyRow | None:
    return session.scalar(
        select(AliasPolicyRow).where(
            AliasPolicyRow.model_id == model.id, AliasPolicyRow.alias == alias
        )
    )


def _entity(model: ModelRow, row: AliasPolicyRow) -> StoredPolicy:
    return StoredPolicy(
        project=model.project,
        model=model.name,
        alias=row.alias,
        policy=AliasPolicy(row.eval_file, row.metric, row.min_delta),
        created_by=row.created_by,
        created_at=rows.aware(row.created_at),
    )
