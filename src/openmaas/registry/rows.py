"""SQL rows of the registry to the entities it hands out, and the lookups every part shares.

Rows never leave the registry: the store, the alias service, registration and the files
service all find rows here inside their own transaction and return frozen entities.

Example::

    with db.transaction() as session:
        model = model_row(session, "default", "minilm")
        version = version_entity(session, model, version_row(session, model, 1))
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from openmaas.auth.entities import DEFAULT_PROJECT
from openmaas.errors import AliasNotFound, ModelNotFound, VersionNotFound
from openmaas.registry.entities import (
    AliasEvent,
    FileEntry,
    Lineage,
    ModelVersion,
    RegisteredModel,
    Storage,
    VersionStatus,
    VersionVariant,
)
from openmaas.registry.names import qualified
from openmaas.store.tables import (
    AliasEventRow,
    AliasRow,
    ModelRow,
    VersionRow,
    VersionVariantRow,
)


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def model_row(session: Session, project: str, name: str, *, lock: bool = False) -> ModelRow:
    """Project `project`'s model `name` (names are each project's own)."""
    query = select(ModelRow).where(ModelRow.project == project, ModelRow.name == name)
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise ModelNotFound(f"model {qualified(project, name)!r} not found", param="model")
    return row


def models_named(session: Session, name: str) -> list[ModelRow]:
    """Every project's model called `name` (few: one per project at most), by project."""
    return list(
        session.scalars(
            select(ModelRow).where(ModelRow.name == name).order_by(ModelRow.project)
        ).all()
    )


def lock_model(session: Session, row: ModelRow) -> ModelRow:
    """`row` again, locked until the transaction ends."""
    return session.scalars(select(ModelRow).where(ModelRow.id == row.id).with_for_update()).one()


def version_row(session: Session, model: ModelRow, version: int) -> VersionRow:
    row = session.scalar(
        select(VersionRow).where(VersionRow.model_id == model.id, VersionRow.version == version)
    )
    if row is None:
        versions = session.scalars(
            select(VersionRow.version)
            .where(VersionRow.model_id == model.id)
            .order_by(VersionRow.version)
        ).all()
        known = ", ".join(map(str, versions)) or "none"
        raise VersionNotFound(
            f"model {model.name!r} has no version {version} (versions: {known})",
            param="version",
        )
    return row


def alias_row(session: Session, model: ModelRow, alias: str) -> AliasRow:
    row = session.scalar(
        select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
    )
    if row is None:
        known = ", ".join(sorted(aliases_of(session, model))) or "none"
        raise AliasNotFound(
            f"model {model.name!r} has no alias {alias!r} (aliases: {known})", param="alias"
        )
    return row


def aliases_of(session: Session, model: ModelRow) -> dict[str, int]:
    rows = session.execute(
        select(AliasRow.alias, AliasRow.version).where(AliasRow.model_id == model.id)
    ).all()
    return {alias: version for alias, version in rows}


def newest_version(session: Session, model: ModelRow) -> int:
    newest = session.scalar(
        select(func.max(VersionRow.version)).where(
            VersionRow.model_id == model.id, VersionRow.status == VersionStatus.READY.value
        )
    )
    if newest is None:
        raise VersionNotFound(f"model {model.name!r} has no versions yet", param="model")
    return int(newest)


def lock_or_create_model(
    session: Session, name: str, actor: str, project: str | None, *, public: bool = False
) -> ModelRow:
    """The model row, created if missing (`public` as given), locked until the transaction
    ends (so version numbers taken under it are distinct and gap-free across processes)."""
    moment = now()
    owner = project or DEFAULT_PROJECT
    values = {
        "name": name,
        "project": owner,
        "public": public,
        "description": "",
        "tags": {},
        "last_version": 0,
        "created_at": moment,
        "updated_at": moment,
        "created_by": actor,
    }
    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    insert = pg_insert if postgres else sqlite_insert
    session.execute(insert(ModelRow).values(**values).on_conflict_do_nothing())
    return model_row(session, owner, name, lock=True)


def model_entity(session: Session, row: ModelRow) -> RegisteredModel:
    latest = session.scalar(
        select(func.max(VersionRow.version)).where(VersionRow.model_id == row.id)
    )
    return RegisteredModel(
        name=row.name,
        description=row.description,
        tags=dict(row.tags),
        latest_version=latest,
        aliases=dict(sorted(aliases_of(session, row).items())),
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        created_by=row.created_by,
        project=row.project,
        public=row.public,
    )


def version_entity(session: Session, model: ModelRow, row: VersionRow) -> ModelVersion:
    aliases = tuple(sorted(a for a, v in aliases_of(session, model).items() if v == row.version))
    return ModelVersion(
        model=model.name,
        version=row.version,
        task=row.task,
        runtime=row.runtime,
        format=row.format,
        status=row.status,
        description=row.description,
        tags=dict(row.tags),
        params=dict(row.params),
        metrics=dict(row.metrics),
        lineage=Lineage.from_dict(row.lineage),
        files=tuple(FileEntry(**entry) for entry in row.manifest),
        storage=row.storage,
        size_bytes=row.size_bytes,
        aliases=aliases,
        created_at=aware(row.created_at),
        created_by=row.created_by,
        project=model.project,
        public=model.public,
        variants=tuple(
            variant_entity(variant)
            for variant in session.scalars(
                select(VersionVariantRow)
                .where(VersionVariantRow.version_id == row.id)
                .order_by(VersionVariantRow.id)
            )
        ),
    )


def variant_entity(row: VersionVariantRow) -> VersionVariant:
    return VersionVariant(
        id=row.id,
        kind=row.kind,
        runtime=row.runtime,
        params=dict(row.params),
        settings=dict(row.settings),
        metrics={name: float(value) for name, value in row.metrics.items()},
        files=tuple(FileEntry(**entry) for entry in row.manifest),
        size_bytes=row.size_bytes,
        job_id=row.job_id,
        created_at=aware(row.created_at),
    )


def variant_locations(session: Session, *version_ids: int) -> list[str]:
    """Where the variants of these versions keep their files (in the artifact store)."""
    if not version_ids:
        return []
    return list(
        session.scalars(
            select(VersionVariantRow.location).where(VersionVariantRow.version_id.in_(version_ids))
        )
    )


def alias_event_entity(model: str, row: AliasEventRow) -> AliasEvent:
    return AliasEvent(
        model=model,
        alias=row.alias,
        action=row.action,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        created_at=aware(row.created_at),
    )


def version_digest(row: VersionRow) -> str:
    """sha256 of a version's location and manifest: what a `VersionPin` holds it to (row ids
    alone can be reused by SQLite once the newest row is deleted)."""
    content = json.dumps([row.storage, row.location, row.manifest], sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()


def stored_bytes(session: Session, project: str) -> int:
    """What the versions of a project's models keep in the artifact store (versions
    recorded in place are the operator's files, not the project's)."""
    total = session.scalar(
        select(func.coalesce(func.sum(VersionRow.size_bytes), 0))
        .join(ModelRow, ModelRow.id == VersionRow.model_id)
        .where(ModelRow.project == project, VersionRow.storage == Storage.STORE.value)
    )
    return int(total or 0)
