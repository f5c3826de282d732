"""Traffic splits on aliases: the versions an alias's requests go to, by weight, while a
candidate is rolled out.

A split belongs to one alias of one model. The alias's own target is the *baseline* and must
be one of the split's versions; the others are candidates. Requests for `name@alias` (and a
bare `name`, for the `production` alias) are spread over the versions by weight, or by a
header's hash when the split is `sticky`; `shadow` mirrors a share of them to a version whose
answers are compared, never returned. Moving, rolling back or deleting the alias ends the
split (the alias then names one version again), as does `end`, or the serving side when a
candidate breaks the split's rollback policy.

Example::

    traffic = TrafficService(store)
    traffic.set("bert", "production", TrafficSpec(weights={1: 90, 2: 10}, sticky="x-user-id"),
                caller=principal)
    traffic.of_model("bert", caller=principal)  # each of its aliases' splits
    traffic.active(caller=SYSTEM)  # every split, for the serving side
    traffic.end("bert", "production", caller=principal)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openmaas.auth.access import can_see, require_caller
from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest, NotFound
from openmaas.registry import rows
from openmaas.registry.names import check_alias, split_qualified
from openmaas.registry.store import RegistryStore
from openmaas.store.tables import AliasRow, ModelRow, TrafficSplitRow, VersionRow

MAX_SPLIT_VERSIONS = 10
MAX_WEIGHT = 1_000_000
# A sticky header is any token-named request header but those that carry credentials.
_HEADER_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})


@dataclass(frozen=True, slots=True)
class RollbackPolicy:
    """When a candidate is taken out: its error rate above the baseline's by more than
    `max_error_rate_delta`, or its p99 latency above `max_p99_ratio` times the baseline's,
    judged once it has answered `min_requests` requests."""

    max_error_rate_delta: float | None = None
    max_p99_ratio: float | None = None
    min_requests: int = 200

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TrafficSpec:
    """What a caller asks for (versions -> weights, and the options)."""

    weights: Mapping[int, int]
    sticky: str | None = None  # a request header whose value's hash picks the version
    shadow: int | None = None  # a version that gets a mirror of the requests
    shadow_share: float = 1.0  # of the requests that are mirrored
    rollback: RollbackPolicy | None = None


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    id: int
    project: str
    model: str
    alias: str
    baseline: int  # the alias's own target
    weights: dict[int, int]
    sticky: str | None
    shadow: int | None
    shadow_share: float
    rollback: RollbackPolicy | None
    created_by: str
    created_at: datetime
    candidates: tuple[int, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.project, self.model, self.alias)

    def to_dict(self) -> dict[str, Any]:
        """As the audit log records it."""
        return {
            "versions": {str(v): w for v, w in self.weights.items()},
            "baseline": self.baseline,
            "sticky": self.sticky,
            "shadow": self.shadow,
            "shadow_share": self.shadow_share,
            "rollback": self.rollback.to_dict() if self.rollback else None,
        }


class TrafficService:
    """Sets, reads and ends traffic splits, through the store's access rules."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def set(
        self, name: str, alias: str, spec: TrafficSpec, *, caller: Principal
    ) -> tuple[TrafficSplit | None, TrafficSplit]:
        """Start (or replace) the split of `alias`; returns (the one replaced, the new one)."""
        who = require_caller(caller)
        check_alias(alias)
        _check_spec(spec)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who, lock=True, change=True)
            baseline = rows.alias_row(session, model, alias).version
            existing = set(
                session.scalars(select(VersionRow.version).where(VersionRow.model_id == model.id))
            )
            for version in [*spec.weights, *([spec.shadow] if spec.shadow else [])]:
                if version not in existing:
                    raise InvalidRequest(f"{model.name} has no version {version}", param="versions")
            if baseline not in spec.weights:
                raise InvalidRequest(
                    f"alias {alias!r} points at version {baseline}, the split's baseline: "
                    f'give it a weight (e.g. {{"{baseline}": 90, "<candidate>": 10}})',
                    param="versions",
                )
            row = _split_row(session, model, alias)
            before = _entity(model, row, baseline) if row is not None else None
            if row is None:
                row = TrafficSplitRow(model_id=model.id, alias=alias)
                session.add(row)
            row.weights = {str(v): int(w) for v, w in spec.weights.items()}
            row.sticky = spec.sticky.lower() if spec.sticky else None
            row.shadow_version = spec.shadow
            row.shadow_share = spec.shadow_share
            row.rollback = spec.rollback.to_dict() if spec.rollback else None
            row.created_by = who.actor
            row.created_at = rows.now()
            session.flush()
            after = _entity(model, row, baseline)
        self.store.changed(split_qualified(name)[1])
        return before, after

    def get(self, name: str, alias: str, *, caller: Principal) -> TrafficSplit:
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who)
            baseline = rows.alias_row(session, model, alias).version
            row = _split_row(session, model, alias)
            if row is None:
                raise _no_split(model.name, alias)
            return _entity(model, row, baseline)

    def of_model(self, name: str, *, caller: Principal) -> list[TrafficSplit]:
        """Every split of the model's aliases, by alias (none: an empty list)."""
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who)
            found = session.execute(
                select(TrafficSplitRow, AliasRow.version)
                .join(
                    AliasRow,
                    (AliasRow.model_id == TrafficSplitRow.model_id)
                    & (AliasRow.alias == TrafficSplitRow.alias),
                )
                .where(TrafficSplitRow.model_id == model.id)
                .order_by(TrafficSplitRow.alias)
            ).all()
            return [_entity(model, row, baseline) for row, baseline in found]

    def end(self, name: str, alias: str, *, caller: Principal) -> TrafficSplit:
        """End the split: the alias's requests all go to its own target again."""
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            model = self.store.find_model(session, name, who, lock=True, change=True)
            baseline = rows.alias_row(session, model, alias).version
            row = _split_row(session, model, alias)
            if row is None:
                raise _no_split(model.name, alias)
            ended = _entity(model, row, baseline)
            session.delete(row)
        self.store.changed(split_qualified(name)[1])
        return ended

    def end_if(self, split: TrafficSplit, *, caller: Principal) -> bool:
        """End exactly this split (by id), if it is still the alias's; False if it was
        ended or replaced meanwhile (the serving side's automatic rollback)."""
        require_caller(caller)
        with self.store.db.transaction() as session:
            row = session.get(TrafficSplitRow, split.id)
            if row is None:
                return False
            session.delete(row)
        self.store.changed(split.model)
        return True

    def active(self, *, caller: Principal) -> list[TrafficSplit]:
        """Every split the caller may see (the serving side reads them all as SYSTEM)."""
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            found = session.execute(
                select(TrafficSplitRow, ModelRow, AliasRow.version)
                .join(ModelRow, ModelRow.id == TrafficSplitRow.model_id)
                .join(
                    AliasRow,
                    (AliasRow.model_id == TrafficSplitRow.model_id)
                    & (AliasRow.alias == TrafficSplitRow.alias),
                )
            ).all()
            return [
                _entity(model, row, baseline)
                for row, model, baseline in found
                if can_see(model.project, model.public, who)
            ]


def end_splits(session: Session, model: ModelRow, alias: str) -> bool:
    """End the alias's split inside the caller's transaction (the alias moves, is rolled back
    or deleted: it names one version again). True if there was one."""
    result = session.execute(
        delete(TrafficSplitRow).where(
            TrafficSplitRow.model_id == model.id, TrafficSplitRow.alias == alias
        )
    )
    return bool(getattr(result, "rowcount", 0))


def _split_row(session: Session, model: ModelRow, alias: str) -> TrafficSplitRow | None:
    return session.scalar(
        select(TrafficSplitRow).where(
            TrafficSplitRow.model_id == model.id, TrafficSplitRow.alias == alias
        )
    )


def _no_split(model: str, alias: str) -> NotFound:
    return NotFound(
        f"alias {alias!r} of {model!r} has no traffic split", param="alias", code="no_traffic_split"
    )


def _check_spec(spec: TrafficSpec) -> None:
    if not 2 <= len(spec.weights) <= MAX_SPLIT_VERSIONS:
        raise InvalidRequest(
            f"a split names 2 to {MAX_SPLIT_VERSIONS} versions, got {len(spec.weights)} "
            "(to send every request to one version, move the alias to it)",
            param="versions",
        )
    for version, weight in spec.weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise InvalidRequest(
                f"versions.{version}: a weight is a whole number from 0 to {MAX_WEIGHT}, "
                f"got {weight!r}",
                param=f"versions.{version}",
            )
    if sum(spec.weights.values()) == 0:
        raise InvalidRequest("versions: the weights add up to 0", param="versions")
    if spec.sticky is not None:
        if not _HEADER_RE.fullmatch(spec.sticky):
            raise InvalidRequest(f"sticky: {spec.sticky!r} is not a header name", param="sticky")
        if spec.sticky.lower() in SECRET_HEADERS:
            raise InvalidRequest(
                f"sticky: {spec.sticky!r} carries credentials; name a header such as x-user-id",
                param="sticky",
            )
    if spec.shadow is not None and spec.shadow in spec.weights:
        raise InvalidRequest(
            f"shadow: version {spec.shadow} already takes live traffic in the split",
            param="shadow",
        )
    if not 0 < spec.shadow_share <= 1:
        raise InvalidRequest(
            f"shadow_share must be above 0 and at most 1, got {spec.shadow_share!r}",
            param="shadow_share",
        )
    policy = spec.rollback
    if policy is not None:
        if policy.max_error_rate_delta is None and policy.max_p99_ratio is None:
            raise InvalidRequest(
                "rollback: give max_error_rate_delta, max_p99_ratio or both", param="rollback"
            )
        if policy.max_error_rate_delta is not None and not 0 <= policy.max_error_rate_delta <= 1:
            raise InvalidRequest(
                "rollback.max_error_rate_delta is a rate difference from 0 to 1, got "
                f"{policy.max_error_rate_delta!r}",
                param="rollback.max_error_rate_delta",
            )
        if policy.max_p99_ratio is not None and not 1 <= policy.max_p99_ratio <= 1000:
            raise InvalidRequest(
                f"rollback.max_p99_ratio is from 1 to 1000, got {policy.max_p99_ratio!r}",
                param="rollback.max_p99_ratio",
            )
        if not 1 <= policy.min_requests <= 10_000_000:
            raise InvalidRequest(
                f"rollback.min_requests is from 1 to 10000000, got {policy.min_requests!r}",
                param="rollback.min_requests",
            )


def _entity(model: ModelRow, row: TrafficSplitRow, baseline: int) -> TrafficSplit:
    weights = {int(v): int(w) for v, w in sorted(row.weights.items(), key=lambda i: int(i[0]))}
    policy = RollbackPolicy(**row.rollback) if row.rollback else None
    return TrafficSplit(
        id=row.id,
        project=model.project,
        model=model.name,
        alias=row.alias,
        baseline=baseline,
        weights=weights,
        sticky=row.sticky,
        shadow=row.shadow_version,
        shadow_share=row.shadow_share,
        rollback=policy,
        created_by=row.created_by,
        created_at=rows.aware(row.created_at),
        candidates=tuple(v for v in weights if v != baseline),
    )
