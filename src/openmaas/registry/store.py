"""The registry store: models and their versions as entities, metadata edits with history,
deletes, and who may see or change which model.

Every entry point takes the caller explicitly. A model the caller may not see is reported
exactly like one that does not exist; a visible model of another project (a public one) is
read-only to the caller.

Example::

    store = RegistryStore(db, artifacts)
    store.get_version("minilm", 1, caller=principal).task  # -> "embedding"
    store.update_model("minilm", description="sentence embeddings", caller=principal)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.auth.access import (
    can_see,
    check_changeable,
    check_visible,
    is_admin,
    require_caller,
)
from openmaas.auth.entities import Principal
from openmaas.errors import (
    Conflict,
    InvalidReference,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    VersionNotFound,
)
from openmaas.registry import rows
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.compare import compare_versions
from openmaas.registry.entities import (
    MetadataEdit,
    ModelVersion,
    RegisteredModel,
    Storage,
    VersionComparison,
    VersionPin,
)
from openmaas.registry.names import qualified, split_qualified
from openmaas.store.database import Database
from openmaas.store.tables import (
    AliasRow,
    MetadataEditRow,
    ModelRow,
    VersionRow,
    VersionVariantRow,
)

MAX_TAGS = 64
MAX_TAG_CHARS = 256


def check_tags(tags: Mapping[str, Any], *, allow_none: bool = False) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags per model or version", param="tags")
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_CHARS or not key.isprintable():
            raise InvalidRequest(
                f"tag {key!r}: keys must be 1-{MAX_TAG_CHARS} printable characters (no "
                "newlines or other control characters)",
                param="tags",
            )
        if value is None and allow_none:
            continue
        if not isinstance(value, str) or len(value) > MAX_TAG_CHARS:
            raise InvalidRequest(
                f"tag {key!r}: values must be strings of at most {MAX_TAG_CHARS} characters",
                param="tags",
            )


def check_metrics(metrics: Mapping[str, Any]) -> None:
    for key, value in metrics.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidRequest(
                f"metric {key!r} must be a finite number, got {value!r}", param="metrics"
            )


def require_admin(caller: Principal, what: str) -> None:
    if not is_admin(caller):
        raise PermissionDenied(f"{what} needs an admin key", code="insufficient_scope")


class RegistryStore:
    """Models and versions as entities over the metadata database.

    Example::

        store = RegistryStore(db, artifacts)
        [m.name for m in store.list_models(caller=principal)]  # only what it may see
        store.delete_version("minilm", 2, caller=principal)
    """

    def __init__(self, db: Database, artifacts: ArtifactStore) -> None:
        self.db = db
        # Deletes remove the files the store owns, after the rows are gone.
        self.artifacts = artifacts
        self._listeners: list[Callable[[str], None]] = []

    # -- change notification ------------------------------------------------------------

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(model_name)` after any change to what a reference of that model
        resolves to (new version, alias change, deletion). The serving router uses it."""
        self._listeners.append(listener)

    def changed(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    # -- lookups shared with the other registry services --------------------------------

    def find_model(
        self,
        session: Session,
        name: str,
        caller: Principal,
        *,
        lock: bool = False,
        change: bool = False,
    ) -> ModelRow:
        """The model row as `caller` may use it: to read, or (`change`) to change.

        `project/name` is that project's model. A bare `name` is the caller's own project's
        model, else the public model of that name; for an admin, else the one model of that
        name in any project (two or more: qualify it). Another project's hidden model is
        'not found', whether or not the caller's project has one of the same name.
        """
        who = require_caller(caller)
        project, bare = split_qualified(name)
        if project is not None:
            row = rows.model_row(session, project, bare, lock=lock)
        else:
            row = visible_row(rows.models_named(session, bare), bare, who)
            if lock:
                row = rows.lock_model(session, row)
        if change:
            check_changeable(row.name, row.project, row.public, caller)
        else:
            check_visible(row.name, row.project, row.public, caller)
        return row

    def version_with_location(
        self, name: str, version: int, *, caller: Principal, change: bool = False
    ) -> tuple[ModelVersion, str]:
        require_caller(caller)
        with self.db.transaction() as session:
            model = self.find_model(session, name, caller, change=change)
            row = rows.version_row(session, model, version)
            return rows.version_entity(session, model, row), row.location

    def pin(self, name: str, version: int, *, caller: Principal) -> VersionPin:
        """The version `name:version` as `caller` may see it, pinned (see `VersionPin`)."""
        require_caller(caller)
        with self.db.transaction() as session:
            model = self.find_model(session, name, caller)
            row = rows.version_row(session, model, version)
            return VersionPin(model.name, row.version, row.id, rows.version_digest(row))

    def pinned_with_location(
        self, pin: VersionPin, *, caller: Principal
    ) -> tuple[ModelVersion, str]:
        """The pinned version if it still exists, unchanged, and `caller` may see it; else
        `VersionNotFound` naming the pin (never another version of the same name)."""
        require_caller(caller)
        with self.db.transaction() as session:
            row = session.get(VersionRow, pin.version_id)
            model = session.get(ModelRow, row.model_id) if row is not None else None
            if (
                row is None
                or model is None
                or (model.name, row.version) != (pin.model, pin.version)
                or rows.version_digest(row) != pin.digest
                or not can_see(model.project, model.public, caller)
            ):
                raise VersionNotFound(
                    f"model version {pin.reference} is gone: it was deleted (or its name "
                    "registered again), or it is not visible to the project",
                    param="model",
                )
            return rows.version_entity(session, model, row), row.location

    def variant_location(self, variant_id: int) -> str:
        """Where a variant's files are; `VersionNotFound` when it was deleted (with its
        version) since it was read."""
        with self.db.transaction() as session:
            row = session.get(VersionVariantRow, variant_id)
            if row is None:
                raise VersionNotFound(f"version variant {variant_id} is gone", param="model")
            return row.location

    def stored_locations(self) -> set[str]:
        """Where every version (and version variant) the artifact store owns lives (the
        rest are orphans)."""
        with self.db.transaction() as session:
            versions = session.scalars(
                select(VersionRow.location).where(VersionRow.storage == Storage.STORE.value)
            )
            return {*versions, *session.scalars(select(VersionVariantRow.location))}

    def stored_version_rows(self) -> list[tuple[ModelVersion, str]]:
        """Every version whose files the artifact store owns, with its location."""
        with self.db.transaction() as session:
            found = session.execute(
                select(ModelRow, VersionRow)
                .join(VersionRow, VersionRow.model_id == ModelRow.id)
                .where(VersionRow.storage == Storage.STORE.value)
                .order_by(ModelRow.name, VersionRow.version)
            ).all()
            return [(rows.version_entity(session, m, v), v.location) for m, v in found]

    # -- models -------------------------------------------------------------------------

    def list_models(self, *, caller: Principal) -> list[RegisteredModel]:
        """The models `caller` may see, by name."""
        who = require_caller(caller)
        with self.db.transaction() as session:
            found = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [
                rows.model_entity(session, row)
                for row in found
                if can_see(row.project, row.public, who)
            ]

    def get_model(self, name: str, *, caller: Principal) -> RegisteredModel:
        who = require_caller(caller)
        with self.db.transaction() as session:
            return rows.model_entity(session, self.find_model(session, name, who))

    def set_public(self, name: str, public: bool, *, caller: Principal) -> tuple[bool, bool]:
        """Make a model visible to every project, or only to its own (admins only); returns
        (before, after)."""
        who = require_caller(caller)
        require_admin(who, "changing a model's visibility")
        with self.db.transaction() as session:
            row = self.find_model(session, name, who, lock=True, change=True)
            if public:
                check_public_name_free(session, row)
            before = row.public
            row.public = public
            bare = row.name
        self.changed(bare)
        return before, public

    def update_model(
        self,
        name: str,
        *,
        caller: Principal,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        actor: str | None = None,
    ) -> RegisteredModel:
        """Edit a model's description or tags; `actor` (default: the caller's) is recorded."""
        who = require_caller(caller)
        with self.db.transaction() as session:
            row = self.find_model(session, name, who, lock=True, change=True)
            _edit_metadata(session, row, None, row, description, tags, actor or who.actor)
            return rows.model_entity(session, row)

    def delete_model(self, name: str, *, caller: Principal) -> list[str]:
        """Delete a model with all its versions and files; returns the removed locations."""
        who = require_caller(caller)
        with self.db.transaction() as session:
            row = self.find_model(session, name, who, lock=True, change=True)
            locations = list(
                session.scalars(
                    select(VersionRow.location).where(
                        VersionRow.model_id == row.id, VersionRow.storage == Storage.STORE.value
                    )
                )
            )
            version_ids = session.scalars(
                select(VersionRow.id).where(VersionRow.model_id == row.id)
            ).all()
            # Variants go with their versions (the database cascades the rows).
            locations += rows.variant_locations(session, *version_ids)
            bare = row.name
            session.delete(row)
        self.changed(bare)
        for location in locations:
            self.artifacts.remove(location)
        return locations

    # -- versions -----------------------------------------------------------------------

    def list_versions(self, name: str, *, caller: Principal) -> list[ModelVersion]:
        who = require_caller(caller)
        with self.db.transaction() as session:
            model = self.find_model(session, name, who)
            found = session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model.id)
                .order_by(VersionRow.version)
            ).all()
            return [rows.version_entity(session, model, row) for row in found]

    def get_version(self, name: str, version: int, *, caller: Principal) -> ModelVersion:
        who = require_caller(caller)
        with self.db.transaction() as session:
            model = self.find_model(session, name, who)
            return rows.version_entity(session, model, rows.version_row(session, model, version))

    def update_version(
        self,
        name: str,
        version: int,
        *,
        caller: Principal,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Edit a version's description or tags (its files and manifest never change)."""
        who = require_caller(caller)
        with self.db.transaction() as session:
            model = self.find_model(session, name, who, lock=True, change=True)
            row = rows.version_row(session, model, version)
            _edit_metadata(session, model, version, row, description, tags, actor or who.actor)
            return rows.version_entity(session, model, row)

    def delete_version(self, name: str, version: int, *, caller: Principal) -> None:
        """Delete a version and its stored files; refused while an alias points at it."""
        who = require_caller(caller)
        with self.db.transaction() as session:
            model = self.find_model(session, name, who, lock=True, change=True)
            row = rows.version_row(session, model, version)
            aliases = session.scalars(
                select(AliasRow.alias).where(
                    AliasRow.model_id == model.id, AliasRow.version == version
                )
            ).all()
            if aliases:
                raise Conflict(
                    f"version {version} of {name!r} is the target of alias "
                    f"{', '.join(sorted(aliases))}; move or delete the alias first",
                    param="version",
                )
            location, storage, bare = row.location, row.storage, model.name
            variants = rows.variant_locations(session, row.id)  # rows: cascaded
            session.delete(row)
        self.changed(bare)
        if storage == Storage.STORE.value:
            self.artifacts.remove(location)
        for variant in variants:
            self.artifacts.remove(variant)

    def metadata_history(
        self, name: str, version: int | None = None, *, caller: Principal
    ) -> list[MetadataEdit]:
        """Edits of the model (`version` None: every edit) or of one version, oldest first."""
        who = require_caller(caller)
        with self.db.transaction() as session:
            model = self.find_model(session, name, who)
            query = select(MetadataEditRow).where(MetadataEditRow.model_id == model.id)
            if version is not None:
                query = query.where(MetadataEditRow.version == version)
            found = session.scalars(query.order_by(MetadataEditRow.id)).all()
            return [
                MetadataEdit(
                    model=model.name,
                    version=r.version,
                    before=r.before,
                    after=r.after,
                    actor=r.actor,
                    created_at=rows.aware(r.created_at),
                )
                for r in found
            ]

    def compare(self, name: str, a: int, b: int, *, caller: Principal) -> VersionComparison:
        who = require_caller(caller)
        return compare_versions(
            self.get_version(name, a, caller=who), self.get_version(name, b, caller=who)
        )


def check_public_name_free(session: Session, row: ModelRow) -> None:
    """A bare name must mean one public model: refuse a second public model of that name."""
    for other in rows.models_named(session, row.name):
        if other.public and other.id != row.id:
            raise Conflict(
                f"a public model named {row.name!r} exists already (project "
                f"{other.project!r}); rename one of them first",
                param="name",
                code="name_taken",
            )


def visible_row(candidates: list[ModelRow], name: str, caller: Principal) -> ModelRow:
    """Which of the models called `name` a bare `name` means for `caller` (see find_model)."""
    own = [row for row in candidates if row.project == caller.project]
    if own:
        return own[0]
    public = [row for row in candidates if row.public]
    if len(public) == 1:
        return public[0]
    reachable = candidates if is_admin(caller) else public
    if len(reachable) == 1:
        return reachable[0]
    if reachable:
        choices = ", ".join(repr(qualified(row.project, name)) for row in reachable)
        raise InvalidReference(
            f"model {name!r} exists in several projects: name one as project/name ({choices})",
            param="model",
        )
    raise ModelNotFound(f"model {name!r} not found", param="model")


def _edit_metadata(
    session: Session,
    model: ModelRow,
    version: int | None,
    row: ModelRow | VersionRow,
    description: str | None,
    tags: Mapping[str, str | None] | None,
    actor: str,
) -> None:
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if description is not None and description != row.description:
        before["description"], after["description"] = row.description, description
        row.description = description
    if tags is not None:
        check_tags(tags, allow_none=True)
        merged = {k: v for k, v in {**row.tags, **tags}.items() if v is not None}
        check_tags(merged)
        if merged != row.tags:
            before["tags"], after["tags"] = dict(row.tags), merged
            row.tags = merged
    if not after:
        return
    model.updated_at = rows.now()
    session.add(
        MetadataEditRow(
            model_id=model.id,
            version=version,
            before=before,
            after=after,
            actor=actor,
            created_at=rows.now(),
        )
    )
