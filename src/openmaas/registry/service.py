"""The registry service: register immutable versions, move aliases, resolve references.

Example::

    registry = RegistryService(db, ArtifactStore(root), allow_pickle=False, limits=limits)
    registry.start()
    v = registry.register_plan("minilm", plan_directory(Path("all-MiniLM-L6-v2")), VersionSpec())
    registry.set_alias("minilm", "production", v.version, actor="alice", reason="first")
    registry.resolve("minilm").version  # -> 1
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from openmaas.auth.entities import DEFAULT_PROJECT
from openmaas.errors import (
    AliasNotFound,
    ArtifactCorrupted,
    Conflict,
    InvalidRequest,
    ModelNotFound,
    NothingToRollBack,
    OpenMaaSError,
    VersionNotFound,
)
from openmaas.registry.artifacts import (
    CHUNK_BYTES,
    ArtifactStore,
    Progress,
    StagedArtifact,
    hash_files,
    verify_files,
)
from openmaas.registry.compare import compare_versions
from openmaas.registry.detection import Detected, detect, require_task
from openmaas.registry.entities import (
    AliasEvent,
    FileEntry,
    Lineage,
    MetadataEdit,
    ModelVersion,
    RegisteredModel,
    Storage,
    VerifyProblem,
    VerifyReport,
    VersionComparison,
    VersionStatus,
)
from openmaas.registry.intake import (
    ArchiveLimits,
    iter_archive_files,
    open_archive,
    refuse_if_pickle,
    walk_directory,
)
from openmaas.registry.names import (
    DEFAULT_ALIAS,
    check_alias,
    check_model_name,
    parse_reference,
)
from openmaas.registry.sources import FilePlan
from openmaas.store.database import Database
from openmaas.store.tables import AliasEventRow, AliasRow, MetadataEditRow, ModelRow, VersionRow

MAX_TAGS = 64
MAX_TAG_CHARS = 256


@dataclass(frozen=True, slots=True)
class OpenedVersion:
    """A version's files as plaintext on disk. When they are a decrypted copy (the version is
    encrypted at rest), `close()` deletes it; otherwise it does nothing.

    Example::

        with registry.open_files("minilm") as opened:
            model = runtime.load(ModelSource.from_version(opened.version, opened.directory), o)
    """

    version: ModelVersion
    directory: Path
    decrypted: bool = False

    def close(self) -> None:
        if self.decrypted:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> OpenedVersion:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """What the caller says about a new version; anything left None is detected."""

    task: str | None = None
    runtime: str | None = None
    format: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: Lineage = field(default_factory=Lineage)
    alias: str | None = None  # moved to the new version once it is registered
    created_by: str = ""
    # The caller's project: a new model belongs to it, an existing one must. None: any
    # (admins and the server itself); a new model then goes to the default project.
    project: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_tags(tags: Mapping[str, Any], *, allow_none: bool = False) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags per model or version", param="tags")
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_CHARS:
            raise InvalidRequest(f"tag keys must be 1-{MAX_TAG_CHARS} characters", param="tags")
        if value is None and allow_none:
            continue
        if not isinstance(value, str) or len(value) > MAX_TAG_CHARS:
            raise InvalidRequest(
                f"tag {key!r}: values must be strings of at most {MAX_TAG_CHARS} characters",
                param="tags",
            )


def _check_metrics(metrics: Mapping[str, Any]) -> None:
    for key, value in metrics.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidRequest(
                f"metric {key!r} must be a finite number, got {value!r}", param="metrics"
            )


class RegistryService:
    """Models, their immutable versions, aliases with history, and verified artifacts."""

    def __init__(
        self,
        db: Database,
        artifacts: ArtifactStore,
        *,
        allow_pickle: bool,
        limits: ArchiveLimits,
    ) -> None:
        self.db = db
        self.artifacts = artifacts
        self.allow_pickle = allow_pickle
        self.limits = limits
        self._listeners: list[Callable[[str], None]] = []

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(model_name)` after any change to what a reference of that model
        resolves to (new version, alias change, deletion). The serving router uses it."""
        self._listeners.append(listener)

    def _changed(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    def start(self) -> None:
        self.artifacts.start()
        with self.db.transaction() as session:
            referenced = set(
                session.scalars(
                    select(VersionRow.location).where(VersionRow.storage == Storage.STORE.value)
                )
            )
        self.artifacts.sweep_orphans(referenced)

    # -- registration -------------------------------------------------------------------

    def register_plan(
        self,
        name: str,
        plan: FilePlan,
        spec: VersionSpec,
        *,
        progress: Progress | None = None,
        storage: Storage = Storage.STORE,
    ) -> ModelVersion:
        """Register the files of `plan` as the model's next version.

        STORE copies them into the artifact store; EXTERNAL records them in place (used for
        installed packages, whose files we hash but do not own).
        """
        check_model_name(name)
        self._check_spec(spec)
        for rel, path in plan.files.items():
            refuse_if_pickle(rel, path, allow_pickle=self.allow_pickle)
        detected = detect(plan.files)
        task = require_task(detected, spec.task)
        lineage = self._lineage_with_source(spec.lineage, plan.source)
        if storage is Storage.EXTERNAL:
            if plan.root is None:
                raise InvalidRequest("in-place registration needs a single source directory")
            files = hash_files(plan.files, progress)
            return self._commit(
                name,
                spec,
                Detected(task, detected.runtime, detected.format),
                lineage,
                files,
                storage=storage,
                location=str(plan.root),
                staged=None,
            )
        staged = self.artifacts.stage_files(plan.files, progress)
        return self._commit(
            name,
            spec,
            Detected(task, detected.runtime, detected.format),
            lineage,
            staged.files,
            storage=storage,
            location=None,
            staged=staged,
        )

    def register_archive(
        self,
        name: str,
        archive: Path | IO[bytes],
        spec: VersionSpec,
        *,
        source: dict[str, Any],
    ) -> ModelVersion:
        """Unpack an uploaded .tar.gz safely into staging, then register it."""
        check_model_name(name)
        self._check_spec(spec)
        if self.artifacts.encrypts:
            return self._register_archive_decrypted(name, archive, spec, source=source)
        staging = self.artifacts.new_staging()
        try:
            with open_archive(archive) as tar:
                streams = ((rel, stream) for rel, stream, _ in iter_archive_files(tar, self.limits))
                staged = self.artifacts.stage_streams(staging, streams)
            if not staged.files:
                raise InvalidRequest("the archive holds no files", param="file")
            files = walk_directory(staging)
            for rel, path in files.items():
                refuse_if_pickle(rel, path, allow_pickle=self.allow_pickle)
            detected = detect(files)
            task = require_task(detected, spec.task)
        except BaseException:
            self.artifacts.discard(staging)
            raise
        lineage = self._lineage_with_source(spec.lineage, source)
        return self._commit(
            name,
            spec,
            Detected(task, detected.runtime, detected.format),
            lineage,
            staged.files,
            storage=Storage.STORE,
            location=None,
            staged=staged,
        )

    def _register_archive_decrypted(
        self,
        name: str,
        archive: Path | IO[bytes],
        spec: VersionSpec,
        *,
        source: dict[str, Any],
    ) -> ModelVersion:
        # Staged files are encrypted, so they cannot be scanned or detected where they are:
        # unpack into a private plaintext scratch directory and register from there.
        scratch: Path | None = None
        try:
            with open_archive(archive) as tar:
                members = list(iter_archive_files(tar, self.limits))
                scratch = self.artifacts.new_scratch(sum(size for _, _, size in members))
                for rel, stream, _ in members:
                    target = scratch / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with stream, target.open("xb") as out:
                        shutil.copyfileobj(stream, out, CHUNK_BYTES)
            files = walk_directory(scratch)
            if not files:
                raise InvalidRequest("the archive holds no files", param="file")
            return self.register_plan(name, FilePlan(files=files, source=source), spec)
        finally:
            if scratch is not None:
                self.artifacts.discard(scratch)

    def _check_spec(self, spec: VersionSpec) -> None:
        _check_tags(spec.tags)
        _check_metrics(spec.metrics)
        if spec.alias is not None:
            check_alias(spec.alias)

    @staticmethod
    def _lineage_with_source(lineage: Lineage, source: dict[str, Any]) -> Lineage:
        merged = {**source, **lineage.source}
        return Lineage(
            source=merged,
            parent_version=lineage.parent_version,
            transform=lineage.transform,
            dataset_id=lineage.dataset_id,
            dataset_sha256=lineage.dataset_sha256,
            job_id=lineage.job_id,
        )

    def _commit(
        self,
        name: str,
        spec: VersionSpec,
        kind: Detected,
        lineage: Lineage,
        files: tuple[FileEntry, ...],
        *,
        storage: Storage,
        location: str | None,
        staged: StagedArtifact | None,
    ) -> ModelVersion:
        assert kind.task is not None  # callers resolve it with require_task first
        published: str | None = None
        try:
            with self.db.transaction() as session:
                model = self._lock_or_create_model(session, name, spec.created_by, spec.project)
                if spec.project is not None and model.project != spec.project:
                    raise Conflict(
                        f"the model name {name!r} is taken by another project; choose another",
                        param="name",
                        code="name_taken",
                    )
                # The model row is locked until commit, so numbers are distinct and gap-free
                # across processes; a failed registration rolls its number back.
                model.last_version += 1
                model.updated_at = _now()
                if staged is not None:
                    published = self.artifacts.publish(staged)
                    location = published
                assert location is not None
                row = VersionRow(
                    model_id=model.id,
                    version=model.last_version,
                    task=kind.task,
                    runtime=spec.runtime or kind.runtime,
                    format=spec.format or kind.format,
                    status=VersionStatus.READY.value,
                    description=spec.description,
                    tags=dict(spec.tags),
                    params=dict(spec.params),
                    metrics={k: float(v) for k, v in spec.metrics.items()},
                    lineage=lineage.to_dict(),
                    manifest=[entry.to_dict() for entry in files],
                    storage=storage.value,
                    location=location,
                    size_bytes=sum(entry.size for entry in files),
                    created_at=_now(),
                    created_by=spec.created_by,
                )
                session.add(row)
                session.flush()
                if spec.alias is not None:
                    self._move_alias(
                        session,
                        model,
                        spec.alias,
                        row.version,
                        spec.created_by,
                        "set at registration",
                    )
                registered = self._version_entity(session, model, row)
        except BaseException:
            if published is not None:
                self.artifacts.remove(published)
            elif staged is not None:
                self.artifacts.discard(staged.path)
            raise
        self._changed(name)
        return registered

    def _lock_or_create_model(
        self, session: Session, name: str, actor: str, project: str | None
    ) -> ModelRow:
        now = _now()
        values = {
            "name": name,
            "project": project or DEFAULT_PROJECT,
            "public": False,
            "description": "",
            "tags": {},
            "last_version": 0,
            "created_at": now,
            "updated_at": now,
            "created_by": actor,
        }
        insert = (
            pg_insert
            if session.bind and session.bind.dialect.name == "postgresql"
            else (sqlite_insert)
        )
        session.execute(insert(ModelRow).values(**values).on_conflict_do_nothing())
        model = session.scalars(
            select(ModelRow).where(ModelRow.name == name).with_for_update()
        ).one()
        return model

    # -- models -------------------------------------------------------------------------

    def set_public(self, name: str, public: bool) -> tuple[bool, bool]:
        """Make a model visible to every project, or only to its own; returns (before, after)."""
        with self.db.transaction() as session:
            row = self._model_row(session, name, lock=True)
            before = row.public
            row.public = public
        self._changed(name)
        return before, public

    def list_models(self) -> list[RegisteredModel]:
        with self.db.transaction() as session:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [self._model_entity(session, row) for row in rows]

    def get_model(self, name: str) -> RegisteredModel:
        with self.db.transaction() as session:
            return self._model_entity(session, self._model_row(session, name))

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        actor: str = "",
    ) -> RegisteredModel:
        with self.db.transaction() as session:
            row = self._model_row(session, name, lock=True)
            self._edit_metadata(session, row, None, row, description, tags, actor)
            return self._model_entity(session, row)

    def delete_model(self, name: str) -> list[str]:
        """Delete a model with all its versions and files; returns the removed locations."""
        with self.db.transaction() as session:
            row = self._model_row(session, name, lock=True)
            locations = list(
                session.scalars(
                    select(VersionRow.location).where(
                        VersionRow.model_id == row.id, VersionRow.storage == Storage.STORE.value
                    )
                )
            )
            session.delete(row)
        self._changed(name)
        for location in locations:
            self.artifacts.remove(location)
        return locations

    # -- versions -----------------------------------------------------------------------

    def list_versions(self, name: str) -> list[ModelVersion]:
        with self.db.transaction() as session:
            model = self._model_row(session, name)
            rows = session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model.id)
                .order_by(VersionRow.version)
            ).all()
            return [self._version_entity(session, model, row) for row in rows]

    def get_version(self, name: str, version: int) -> ModelVersion:
        with self.db.transaction() as session:
            model = self._model_row(session, name)
            return self._version_entity(session, model, self._version_row(session, model, version))

    def update_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        actor: str = "",
    ) -> ModelVersion:
        """Edit a version's description or tags (its files and manifest never change)."""
        with self.db.transaction() as session:
            model = self._model_row(session, name, lock=True)
            row = self._version_row(session, model, version)
            self._edit_metadata(session, model, version, row, description, tags, actor)
            return self._version_entity(session, model, row)

    def delete_version(self, name: str, version: int) -> None:
        with self.db.transaction() as session:
            model = self._model_row(session, name, lock=True)
            row = self._version_row(session, model, version)
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
            location, storage = row.location, row.storage
            session.delete(row)
        self._changed(name)
        if storage == Storage.STORE.value:
            self.artifacts.remove(location)

    def metadata_history(self, name: str, version: int | None = None) -> list[MetadataEdit]:
        with self.db.transaction() as session:
            model = self._model_row(session, name)
            query = select(MetadataEditRow).where(MetadataEditRow.model_id == model.id)
            if version is not None:
                query = query.where(MetadataEditRow.version == version)
            rows = session.scalars(query.order_by(MetadataEditRow.id)).all()
            return [
                MetadataEdit(
                    model=name,
                    version=r.version,
                    before=r.before,
                    after=r.after,
                    actor=r.actor,
                    created_at=_aware(r.created_at),
                )
                for r in rows
            ]

    def _edit_metadata(
        self,
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
            _check_tags(tags, allow_none=True)
            merged = {k: v for k, v in {**row.tags, **tags}.items() if v is not None}
            _check_tags(merged)
            if merged != row.tags:
                before["tags"], after["tags"] = dict(row.tags), merged
                row.tags = merged
        if not after:
            return
        model.updated_at = _now()
        session.add(
            MetadataEditRow(
                model_id=model.id,
                version=version,
                before=before,
                after=after,
                actor=actor,
                created_at=_now(),
            )
        )

    # -- references ---------------------------------------------------------------------

    def resolve(self, reference: str) -> ModelVersion:
        """`name` (alias production, else newest), `name@alias` or `name:version`."""
        ref = parse_reference(reference)
        with self.db.transaction() as session:
            model = self._model_row(session, ref.model)
            if ref.version is not None:
                row = self._version_row(session, model, ref.version)
            elif ref.alias is not None and ref.alias != "latest":
                row = self._version_row(
                    session, model, self._alias_target(session, model, ref.alias)
                )
            else:
                target = None
                if ref.alias is None:
                    target = session.scalar(
                        select(AliasRow.version).where(
                            AliasRow.model_id == model.id, AliasRow.alias == DEFAULT_ALIAS
                        )
                    )
                if target is None:
                    target = self._newest_version(session, model)
                row = self._version_row(session, model, target)
            return self._version_entity(session, model, row)

    def _newest_version(self, session: Session, model: ModelRow) -> int:
        newest = session.scalar(
            select(func.max(VersionRow.version)).where(
                VersionRow.model_id == model.id, VersionRow.status == VersionStatus.READY.value
            )
        )
        if newest is None:
            raise VersionNotFound(f"model {model.name!r} has no versions yet", param="model")
        return int(newest)

    # -- aliases ------------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str = "", reason: str = ""
    ) -> AliasEvent | None:
        """Point `alias` at `version`; returns the recorded move (None if it already did)."""
        check_alias(alias)
        with self.db.transaction() as session:
            model = self._model_row(session, name, lock=True)
            self._version_row(session, model, version)
            event = self._move_alias(session, model, alias, version, actor, reason)
        self._changed(name)
        return event

    def delete_alias(
        self, name: str, alias: str, *, actor: str = "", reason: str = ""
    ) -> AliasEvent:
        with self.db.transaction() as session:
            model = self._model_row(session, name, lock=True)
            row = self._alias_row(session, model, alias)
            event = self._record_alias_event(
                session, model, alias, "delete", row.version, None, actor, reason
            )
            session.delete(row)
        self._changed(name)
        return event

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        with self.db.transaction() as session:
            model = self._model_row(session, name)
            query = select(AliasEventRow).where(AliasEventRow.model_id == model.id)
            if alias is not None:
                query = query.where(AliasEventRow.alias == alias)
            rows = session.scalars(query.order_by(AliasEventRow.id)).all()
            return [self._alias_event_entity(name, row) for row in rows]

    def rollback_alias(
        self, name: str, alias: str, *, actor: str = "", reason: str = ""
    ) -> AliasEvent:
        """Move `alias` back to the target it had before its last move.

        History is a stack: v1 -> v2 -> v3, then rollback gives v2 and another gives v1.
        Targets whose version was deleted since are skipped.
        """
        with self.db.transaction() as session:
            model = self._model_row(session, name, lock=True)
            current = self._alias_row(session, model, alias)
            events = session.scalars(
                select(AliasEventRow)
                .where(AliasEventRow.model_id == model.id, AliasEventRow.alias == alias)
                .order_by(AliasEventRow.id)
            ).all()
            stack: list[int] = []
            for event in events:
                if event.action in ("set", "move") and event.to_version is not None:
                    stack.append(event.to_version)
                elif event.action == "rollback":
                    while stack and stack[-1] != event.to_version:
                        stack.pop()
                elif event.action == "delete":
                    stack.clear()
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
            event_row = self._record_alias_event(
                session, model, alias, "rollback", current.version, target, actor, reason
            )
            current.version = target
            current.updated_at = _now()
        self._changed(name)
        return event_row

    def _move_alias(
        self, session: Session, model: ModelRow, alias: str, version: int, actor: str, reason: str
    ) -> AliasEvent | None:
        row = session.scalar(
            select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
        )
        if row is not None and row.version == version:
            return None
        previous = row.version if row is not None else None
        if row is None:
            session.add(
                AliasRow(model_id=model.id, alias=alias, version=version, updated_at=_now())
            )
        else:
            row.version = version
            row.updated_at = _now()
        action = "set" if previous is None else "move"
        return self._record_alias_event(
            session, model, alias, action, previous, version, actor, reason
        )

    def _record_alias_event(
        self,
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
            created_at=_now(),
        )
        session.add(row)
        model.updated_at = _now()
        return self._alias_event_entity(model.name, row)

    # -- compare and verify -------------------------------------------------------------

    def compare(self, name: str, a: int, b: int) -> VersionComparison:
        return compare_versions(self.get_version(name, a), self.get_version(name, b))

    def version_files_root(self, version: ModelVersion, location: str) -> Path:
        if version.storage == Storage.EXTERNAL.value:
            return Path(location)
        return self.artifacts.path_of(location)

    def verify(self, name: str, version: int, progress: Progress | None = None) -> VerifyReport:
        """Re-hash every file of a version against the manifest recorded at registration
        (decrypting files encrypted at rest). Raises `EncryptionKeyError` when the configured
        key does not open them."""
        entity, location = self._version_and_location(name, version)
        root = self.version_files_root(entity, location)
        problems = verify_files(root, entity.files, progress, keys=self.artifacts.keys)
        problems += self._unexpected_files(entity, root)
        return VerifyReport(
            model=name, version=version, files_checked=len(entity.files), problems=tuple(problems)
        )

    def _unexpected_files(self, entity: ModelVersion, root: Path) -> list[VerifyProblem]:
        if entity.storage != Storage.STORE.value or not root.is_dir():
            return []
        known = {f.path for f in entity.files}
        return [
            VerifyProblem(path=rel, problem="unexpected")
            for rel in walk_directory(root)
            if rel not in known
        ]

    def open_files(self, reference: str, *, verify: bool = True) -> OpenedVersion:
        """Resolve a reference to its files as plaintext on disk, hash-checked (for loaders).

        A plaintext version opens where it is stored. A version encrypted at rest is
        decrypted into a private scratch directory (in memory when there is room) and
        checked in the same pass, whatever `verify` says; `close()` deletes that copy, which
        a loader does as soon as its runtime has read the files.
        """
        entity, root = self._locate(reference)
        if not self._encrypted_at_rest(entity, root):
            if verify:
                self._require_intact(entity, self.verify(entity.model, entity.version).problems)
            return OpenedVersion(entity, root)
        scratch = self.artifacts.new_scratch(entity.size_bytes)
        try:
            problems = self.artifacts.copy_plaintext(root, entity.files, scratch)
            self._require_intact(entity, [*problems, *self._unexpected_files(entity, root)])
        except BaseException:
            self.artifacts.discard(scratch)
            raise
        return OpenedVersion(entity, scratch, decrypted=True)

    def open_version(self, reference: str, *, verify: bool = True) -> tuple[ModelVersion, Path]:
        """Resolve a reference to its stored directory, re-checking hashes first.

        For plaintext versions only: the stored files of a version encrypted at rest are
        ciphertext, so it raises for one (loaders use `open_files`, which decrypts a copy).
        """
        entity, root = self._locate(reference)
        if self._encrypted_at_rest(entity, root):
            raise OpenMaaSError(
                f"{entity.model}:{entity.version} is encrypted at rest: its stored files are "
                "ciphertext; open it with RegistryService.open_files(), which decrypts a copy"
            )
        if verify:
            self._require_intact(entity, self.verify(entity.model, entity.version).problems)
        return entity, root

    def stored_versions(self) -> list[tuple[ModelVersion, Path]]:
        """Every version whose files the artifact store owns, with their directory (for
        maintenance such as key rotation)."""
        with self.db.transaction() as session:
            rows = session.execute(
                select(ModelRow, VersionRow)
                .join(VersionRow, VersionRow.model_id == ModelRow.id)
                .where(VersionRow.storage == Storage.STORE.value)
                .order_by(ModelRow.name, VersionRow.version)
            ).all()
            return [
                (self._version_entity(session, model, row), self.artifacts.path_of(row.location))
                for model, row in rows
            ]

    def _locate(self, reference: str) -> tuple[ModelVersion, Path]:
        entity = self.resolve(reference)
        _, location = self._version_and_location(entity.model, entity.version)
        return entity, self.version_files_root(entity, location)

    def _encrypted_at_rest(self, entity: ModelVersion, root: Path) -> bool:
        # Per file: a store that got a key later, or an interrupted rotation, mixes both.
        if entity.storage != Storage.STORE.value:
            return False  # recorded in place: never copied, so never encrypted
        paths = (root / f.path for f in entity.files)
        return any(path.is_file() and self.artifacts.is_encrypted(path) for path in paths)

    @staticmethod
    def _require_intact(entity: ModelVersion, problems: Sequence[VerifyProblem]) -> None:
        if problems:
            first = problems[0]
            raise ArtifactCorrupted(
                f"{entity.model}:{entity.version}: file {first.path!r} failed verification "
                f"({first.problem}); the stored artifact no longer matches its manifest"
            )

    def _version_and_location(self, name: str, version: int) -> tuple[ModelVersion, str]:
        with self.db.transaction() as session:
            model = self._model_row(session, name)
            row = self._version_row(session, model, version)
            return self._version_entity(session, model, row), row.location

    # -- row lookups and entity building ------------------------------------------------

    def _model_row(self, session: Session, name: str, *, lock: bool = False) -> ModelRow:
        query = select(ModelRow).where(ModelRow.name == name)
        if lock:
            query = query.with_for_update()
        row = session.scalar(query)
        if row is None:
            raise ModelNotFound(f"model {name!r} not found", param="model")
        return row

    def _version_row(self, session: Session, model: ModelRow, version: int) -> VersionRow:
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

    def _alias_row(self, session: Session, model: ModelRow, alias: str) -> AliasRow:
        row = session.scalar(
            select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
        )
        if row is None:
            known = ", ".join(sorted(self._aliases(session, model))) or "none"
            raise AliasNotFound(
                f"model {model.name!r} has no alias {alias!r} (aliases: {known})", param="alias"
            )
        return row

    def _alias_target(self, session: Session, model: ModelRow, alias: str) -> int:
        return self._alias_row(session, model, alias).version

    def _aliases(self, session: Session, model: ModelRow) -> dict[str, int]:
        rows = session.execute(
            select(AliasRow.alias, AliasRow.version).where(AliasRow.model_id == model.id)
        ).all()
        return {alias: version for alias, version in rows}

    def _model_entity(self, session: Session, row: ModelRow) -> RegisteredModel:
        latest = session.scalar(
            select(func.max(VersionRow.version)).where(VersionRow.model_id == row.id)
        )
        return RegisteredModel(
            name=row.name,
            description=row.description,
            tags=dict(row.tags),
            latest_version=latest,
            aliases=dict(sorted(self._aliases(session, row).items())),
            created_at=_aware(row.created_at),
            updated_at=_aware(row.updated_at),
            created_by=row.created_by,
            project=row.project,
            public=row.public,
        )

    def _version_entity(self, session: Session, model: ModelRow, row: VersionRow) -> ModelVersion:
        aliases = tuple(
            sorted(a for a, v in self._aliases(session, model).items() if v == row.version)
        )
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
            created_at=_aware(row.created_at),
            created_by=row.created_by,
            project=model.project,
            public=model.public,
        )

    @staticmethod
    def _alias_event_entity(model: str, row: AliasEventRow) -> AliasEvent:
        return AliasEvent(
            model=model,
            alias=row.alias,
            action=row.action,
            from_version=row.from_version,
            to_version=row.to_version,
            actor=row.actor,
            reason=row.reason,
            created_at=_aware(row.created_at),
        )
