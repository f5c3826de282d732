"""Aliases: named pointers at versions that move (with history and rollback), and the
resolution of references (`name`, `name@alias`, `name:version`) to versions.

Every alias change is an append-only event (set, move, delete, rollback) with actor, reason
and time. Rollback treats the history as a stack: v1 -> v2 -> v3, rollback -> v2, rollback
-> v1.

Example::

    aliases = AliasService(store)
    aliases.move("minilm", "production", 2, caller=principal, reason="better recall")
    aliases.resolve("minilm", caller=principal).version  # -> 2
    aliases.rollback("minilm", "production", caller=principal).to_version  # -> 1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.auth.access import is_admin, require_caller
from openmaas.auth.entities import Principal
from openmaas.errors import GateFailed, InvalidRequest, NothingToRollBack, PermissionDenied
from openmaas.registry import rows
from openmaas.registry.entities import AliasEvent, ModelVersion
from openmaas.registry.names import (
    DEFAULT_ALIAS,
    check_alias,
    parse_reference,
    qualified,
    split_qualified,
)
from openmaas.registry.policies import AliasPolicy, PolicyService
from openmaas.registry.store import RegistryStore
from openmaas.registry.traffic import end_splits
from openmaas.store.tables import AliasEventRow, AliasPolicyRow, AliasRow, ModelRow, VersionRow

# The evaluation gate: judges moving `alias` of the model `project/name` from `current` to
# `candidate` under `policy`; returns its verdict (scores) or raises GateFailed.
Gate = Callable[[str, str, int, int, AliasPolicy], Mapping[str, Any]]


class AliasService:
    """Moves aliases and resolves references, through the store's access rules.

    Example::

        aliases = AliasService(store)
        aliases.history("minilm", "production", caller=principal)  # oldest first
    """

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.policies = PolicyService(store)
        # Set by the server and the job worker (`evaluation.gate.AliasGate`); None: a gated
        # alias cannot be moved here (fails closed) except by an admin's forced move.
        self.gate: Gate | None = None

    def resolve(self, reference: str, *, caller: Principal) -> ModelVersion:
        """`name` (alias production, else newest), `name@alias` or `name:version`."""
        who = require_caller(caller)
        ref = parse_reference(reference)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, ref.name, who)
            if ref.version is not None:
                target = ref.version
            elif ref.alias is not None and ref.alias != "latest":
                target = rows.alias_row(session, model, ref.alias).version
            else:
                found = None
                if ref.alias is None:
                    found = session.scalar(
                        select(AliasRow.version).where(
                            AliasRow.model_id == model.id, AliasRow.alias == DEFAULT_ALIAS
                        )
                    )
                target = found if found is not None else rows.newest_version(session, model)
            row = rows.version_row(session, model, target)
            return rows.version_entity(session, model, row)

    def move(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        caller: Principal,
        actor: str | None = None,
        reason: str = "",
        force: bool = False,
    ) -> AliasEvent | None:
        """Point `alias` at `version`; returns the recorded move (None if it already did).
        `actor` (default: the caller's) is recorded with the move. An alias with an
        evaluation gate moves only when the candidate holds up (else 409 `gate_failed`), or
        when an admin forces it with a reason."""
        who = require_caller(caller)
        check_alias(alias)
        verdict = self._judge(name, alias, version, who, force=force, reason=reason)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who, lock=True, change=True)
            rows.version_row(session, model, version)
            event = move_alias(session, model, alias, version, actor or who.actor, reason)
        self.store.changed(split_qualified(name)[1])
        if event is not None and verdict is not None:
            event = replace(event, gate=verdict)
        return event

    def _judge(
        self, name: str, alias: str, version: int, who: Principal, *, force: bool, reason: str
    ) -> Mapping[str, Any] | None:
        """The gate's verdict on the move (None: the alias has no gate, or nothing to
        compare: it is new or already there)."""
        if force:
            if not is_admin(who):
                raise PermissionDenied("only an admin key forces an alias move", param="force")
            if not reason.strip():
                raise InvalidRequest("a forced move needs a reason", param="reason")
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who)
            found = _policy_of(session, model, alias)
            current = session.scalar(
                select(AliasRow.version).where(
                    AliasRow.model_id == model.id, AliasRow.alias == alias
                )
            )
            exact = qualified(model.project, model.name)
        if found is None or current is None or current == version:
            return None
        policy = AliasPolicy(found.eval_file, found.metric, found.min_delta)
        if force:
            return {"forced": True, "reason": reason, "policy": asdict(policy)}
        if self.gate is None:
            raise GateFailed(
                f"alias {alias!r} has an evaluation gate and this process cannot evaluate; "
                "move it through the server",
                param="alias",
            )
        return self.gate(exact, alias, current, version, policy)

    def delete(
        self,
        name: str,
        alias: str,
        *,
        caller: Principal,
        actor: str | None = None,
        reason: str = "",
    ) -> AliasEvent:
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who, lock=True, change=True)
            row = rows.alias_row(session, model, alias)
            event = _record_event(
                session, model, alias, "delete", row.version, None, actor or who.actor, reason
            )
            session.delete(row)
            end_splits(session, model, alias)
        self.store.changed(split_qualified(name)[1])
        return event

    def history(
        self, name: str, alias: str | None = None, *, caller: Principal
    ) -> list[AliasEvent]:
        """Every change of `alias` (None: of every alias of the model), oldest first."""
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who)
            query = select(AliasEventRow).where(AliasEventRow.model_id == model.id)
            if alias is not None:
                query = query.where(AliasEventRow.alias == alias)
            found = session.scalars(query.order_by(AliasEventRow.id)).all()
            return [rows.alias_event_entity(model.name, row) for row in found]

    def rollback(
        self,
        name: str,
        alias: str,
        *,
        caller: Principal,
        actor: str | None = None,
        reason: str = "",
    ) -> AliasEvent:
        """Move `alias` back to the target it had before its last move.

        History is a stack: v1 -> v2 -> v3, then rollback gives v2 and another gives v1.
        Targets whose version was deleted since are skipped.
        """
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who, lock=True, change=True)
            current = rows.alias_row(session, model, alias)
            events = session.scalars(
                select(AliasEventRow)
                .where(AliasEventRow.model_id == model.id, AliasEventRow.alias == alias)
                .order_by(AliasEventRow.id)
            ).all()
            stack = _target_stack(events)
            existing = set(
                session.scalars(select(VersionRow.version).where(VersionRow.model_id == model.id))
            )
            earlier = [v for v in stack[:-1] if v in existing and v != current.version]
            if not earlier:
                raise NothingToRollBack(
                    f"alias {alias!r} of {name!r} has no earlier target to roll back to",
                    param="alias",
                )
            target = earlier[-1]
            event = _record_event(
                session,
                model,
                alias,
                "rollback",
                current.version,
                target,
                actor or who.actor,
                reason,
            )
            current.version = target
            current.updated_at = rows.now()
            end_splits(session, model, alias)
        self.store.changed(split_qualified(name)[1])
        return event


def gate_applies(session: Session, model: ModelRow, alias: str, version: int) -> bool:
    """Whether moving `alias` to `version` needs its gate's verdict (it has a gate and
    points at another version)."""
    if _policy_of(session, model, alias) is None:
        return False
    current = session.scalar(
        select(AliasRow.version).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
    )
    return current is not None and current != version


def _policy_of(session: Session, model: ModelRow, alias: str) -> AliasPolicyRow | None:
    return session.scalar(
        select(AliasPolicyRow).where(
            AliasPolicyRow.model_id == model.id, AliasPolicyRow.alias == alias
        )
    )


def _target_stack(events: Sequence[AliasEventRow]) -> list[int]:
    """The alias's targets as a stack: moves push, rollbacks pop back, a delete clears."""
    stack: list[int] = []
    for event in events:
        if event.action in ("set", "move") and event.to_version is not None:
            stack.append(event.to_version)
        elif event.action == "rollback":
            while stack and stack[-1] != event.to_version:
                stack.pop()
        elif event.action == "delete":
            stack.clear()
    return stack


def move_alias(
    session: Session, model: ModelRow, alias: str, version: int, actor: str, reason: str
) -> AliasEvent | None:
    """Point `alias` at `version` inside the caller's transaction (registration uses it to
    set an alias on the version it creates); None when it already pointed there."""
    row = session.scalar(
        select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
    )
    if row is not None and row.version == version:
        return None
    previous = row.version if row is not None else None
    if row is None:
        session.add(
            AliasRow(model_id=model.id, alias=alias, version=version, updated_at=rows.now())
        )
    else:
        row.version = version
        row.updated_at = rows.now()
    action = "set" if previous is None else "move"
    # The alias names one version again: a split of its traffic ends (a promotion).
    end_splits(session, model, alias)
    return _record_event(session, model, alias, action, previous, version, actor, reason)


def _record_event(
    session: Session,
    model: ModelRow,
    alias: str,
    action: str,
    from_version: int | None,
    to_version: int | None,
    actor: str,
    reason: str,
) -> AliasEvent:
    row = AliasEventRow(
        model_id=model.id,
        alias=alias,
        action=action,
        from_version=from_version,
        to_version=to_version,
        actor=actor,
        reason=reason,
        created_at=rows.now(),
    )
    session.add(row)
    model.updated_at = rows.now()
    return rows.alias_event_entity(model.name, row)
