"""Registration: a model's files become its next immutable version.

A registration plans the files (a directory, ONNX + tokenizer, a package, the Hub, an
uploaded archive), applies the intake rules (no pickles unless allowed, safe archives),
detects task, runtime and format, and publishes the files through the artifact store in the
same transaction that takes the version number (the model row is locked, so concurrent
registrations from many processes get distinct, gap-free numbers).

Example::

    registration = RegistrationService(store, artifacts, allow_pickle=False, limits=limits)
    v = registration.register_plan(
        "minilm", plan_directory(Path("all-MiniLM-L6-v2")), VersionSpec(), caller=principal
    )
    v.version  # -> 1
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from sqlalchemy.orm import Session

from openmaas.auth.access import check_changeable, is_admin, require_caller
from openmaas.auth.entities import SYSTEM, Principal
from openmaas.errors import GateFailed, InvalidRequest, ModelNotFound, PermissionDenied
from openmaas.registry import rows
from openmaas.registry.aliases import AliasService, gate_applies, move_alias
from openmaas.registry.artifacts import (
    CHUNK_BYTES,
    ArtifactStore,
    Progress,
    StagedArtifact,
    hash_files,
)
from openmaas.registry.detection import Detected, detect, require_task
from openmaas.registry.entities import FileEntry, Lineage, ModelVersion, Storage, VersionStatus
from openmaas.registry.intake import (
    ArchiveLimits,
    StorageBudget,
    iter_archive_files,
    open_archive,
    refuse_if_pickle,
    walk_directory,
)
from openmaas.registry.names import check_alias, qualified, split_qualified
from openmaas.registry.sources import (
    SERVER_PATH_SOURCES,
    FilePlan,
    SourceRef,
    installed_package_named,
    package_allowed,
    plan_source,
)
from openmaas.registry.store import (
    RegistryStore,
    check_metrics,
    check_public_name_free,
    check_tags,
    visible_row,
)
from openmaas.runtimes.base import ModelSource
from openmaas.store.tables import ModelRow, VersionRow
from openmaas.tasks.moderation import check_params as check_moderation_params

# Refuses (raises) a new version's files that this server could never load.
LoadCheck = Callable[[ModelSource], None]
# Told of each version once its registration has committed.
Registered = Callable[[ModelVersion], None]
HUB_CACHE_DIR = "hub-cache"  # under the artifact root: one directory per Hub registration


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
    created_by: str = ""  # recorded on the version; empty: the caller's actor
    # The project a new model belongs to (an existing one must belong to it). Only admins
    # (and the server itself) choose it; for anyone else it is the caller's own project.
    # None for an admin: any existing model; a new one goes to the default project.
    project: str | None = None
    # Whether a model this registration creates is public (served to every project). Only
    # an admin (the catalog, as the server) creates one public: from its first instant it is
    # then changeable by admins only, with no moment at which its project's keys own it.
    public: bool = False


class RegistrationService:
    """Registers versions from file plans, sources and uploaded archives.

    Example::

        registration.register_archive(
            "minilm", open("m.tar.gz", "rb"), VersionSpec(), caller=principal,
            source={"type": "upload", "filename": "m.tar.gz"},
        )
    """

    def __init__(
        self,
        store: RegistryStore,
        artifacts: ArtifactStore,
        *,
        allow_pickle: bool,
        limits: ArchiveLimits,
        allowed_packages: Collection[str] = (),
        reserved_names: Collection[str] = (),
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.allow_pickle = allow_pickle
        self.limits = limits
        # Installed packages a non-admin key may register from (normalized names; see
        # sources.normalized_package_name): the catalog's and the operator's allow-list.
        self.allowed_packages = frozenset(allowed_packages)
        # Names only an admin may create (the built-in catalog's): a tenant that took one
        # first would keep the catalog entry from being registered for every project.
        self.reserved_names = frozenset(reserved_names)
        # Set by the server (`serving.pool.check_fits_budget`): refuses a model that could never
        # load under its memory budget before the version is numbered. None: no check.
        self.load_check: LoadCheck | None = None
        # Set by `Registry.create`: alias moves that a gate must judge go through it.
        self.aliases: AliasService | None = None
        # Set by the server and job workers (`optimize.variants.AutoOnnx`): told of every
        # version once it is committed (it queues the version's ONNX variant). It must not
        # raise: the version is registered whatever it does.
        self.on_registered: Registered | None = None

    def register_source(
        self, name: str, source: SourceRef, spec: VersionSpec, *, caller: Principal
    ) -> ModelVersion:
        """Plan the files `source` names and register them (server paths: admins only;
        installed packages: the allowed ones only, unless an admin names them)."""
        who = require_caller(caller)
        split_qualified(name)
        self._check_spec(spec)
        self.check_target(name, spec, who)
        if source.type in SERVER_PATH_SOURCES and not is_admin(who):
            raise PermissionDenied(
                f"registering from a {source.type!r} source reads the server's disk and needs "
                "an admin key; upload the model instead (openmaas models register uploads it)",
                param="source",
                code="insufficient_scope",
            )
        package = installed_package_named(source)
        if package is not None and not is_admin(who):
            self._check_package_allowed(source.type, package)
        with self._hub_cache() as hub_cache:
            plan = plan_source(source, hub_cache, max_hub_bytes=self.limits.max_hub_bytes)
            return self.register_plan(name, plan, spec, caller=who)

    def register_plan(
        self,
        name: str,
        plan: FilePlan,
        spec: VersionSpec,
        *,
        caller: Principal,
        progress: Progress | None = None,
        storage: Storage = Storage.STORE,
    ) -> ModelVersion:
        """Register the files of `plan` as the model's next version.

        STORE copies them into the artifact store; EXTERNAL records them in place (used for
        installed packages, whose files we hash but do not own).
        """
        who = require_caller(caller)
        split_qualified(name)
        self._check_spec(spec)
        self.check_target(name, spec, who)
        budget = self._budget(spec, who) if storage is Storage.STORE else None
        if budget is not None:
            budget.check(sum(path.stat().st_size for path in plan.files.values()))
        for rel, path in plan.files.items():
            refuse_if_pickle(rel, path, allow_pickle=self.allow_pickle)
        detected = detect(plan.files, spec.params)
        kind = replace(detected, task=require_task(detected, spec.task))
        self._check_loadable(name, kind, spec, plan.root, who)
        lineage = _lineage_with_source(spec.lineage, plan.source)
        if storage is Storage.EXTERNAL:
            if plan.root is None:
                raise InvalidRequest("in-place registration needs a single source directory")
            files = hash_files(plan.files, progress)
            return self._commit(name, spec, who, kind, lineage, files, str(plan.root), None)
        staged = self.artifacts.stage_files(plan.files, progress)
        return self._commit(name, spec, who, kind, lineage, staged.files, None, staged)

    def register_archive(
        self,
        name: str,
        archive: Path | IO[bytes],
        spec: VersionSpec,
        *,
        caller: Principal,
        source: dict[str, Any],
    ) -> ModelVersion:
        """Unpack an uploaded .tar.gz safely into staging, then register it."""
        who = require_caller(caller)
        split_qualified(name)
        self._check_spec(spec)
        self.check_target(name, spec, who)
        budget = self._budget(spec, who)
        if self.artifacts.encrypts:
            return self._register_archive_decrypted(name, archive, spec, who, source, budget)
        staging = self.artifacts.new_staging()
        try:
            with open_archive(archive) as tar:
                streams = (
                    (rel, stream) for rel, stream, _ in iter_archive_files(tar, self.limits, budget)
                )
                staged = self.artifacts.stage_streams(staging, streams)
            if not staged.files:
                raise InvalidRequest("the archive holds no files", param="file")
            files = walk_directory(staging)
            for rel, path in files.items():
                refuse_if_pickle(rel, path, allow_pickle=self.allow_pickle)
            detected = detect(files, spec.params)
            kind = replace(detected, task=require_task(detected, spec.task))
            self._check_loadable(name, kind, spec, staging, who)
        except BaseException:
            self.artifacts.discard(staging)
            raise
        lineage = _lineage_with_source(spec.lineage, source)
        return self._commit(name, spec, who, kind, lineage, staged.files, None, staged)

    def _register_archive_decrypted(
        self,
        name: str,
        archive: Path | IO[bytes],
        spec: VersionSpec,
        caller: Principal,
        source: dict[str, Any],
        budget: StorageBudget | None,
    ) -> ModelVersion:
        # Staged files are encrypted, so they cannot be scanned or detected where they are:
        # unpack into a private plaintext scratch directory and register from there.
        scratch: Path | None = None
        try:
            with open_archive(archive) as tar:
                members = list(iter_archive_files(tar, self.limits, budget))
                scratch = self.artifacts.new_scratch(sum(size for _, _, size in members))
                for rel, stream, _ in members:
                    target = scratch / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with stream, target.open("xb") as out:
                        shutil.copyfileobj(stream, out, CHUNK_BYTES)
            files = walk_directory(scratch)
            if not files:
                raise InvalidRequest("the archive holds no files", param="file")
            plan = FilePlan(files=files, source=source, root=scratch)
            return self.register_plan(name, plan, spec, caller=caller)
        finally:
            if scratch is not None:
                self.artifacts.discard(scratch)

    def _check_package_allowed(self, kind: str, package: str) -> None:
        # Decided on the name alone, before anything is looked up: the answer is the same
        # whether or not such a package is installed, and nothing is imported or read.
        if package_allowed(package, self.allowed_packages):
            return
        allowed = ", ".join(sorted(self.allowed_packages)) or "none"
        raise PermissionDenied(
            f"registering from the installed package {package!r} needs an admin key: other "
            f"keys may name only the packages the catalog ships or the operator allows "
            f"(OPENMAAS_ALLOWED_PACKAGE_SOURCES); allowed here: {allowed}",
            param="source.package" if kind == "spacy" else "source.distribution",
            code="source_not_allowed",
        )

    @contextmanager
    def _hub_cache(self) -> Iterator[Path]:
        """Where Hub downloads land before they are staged: a directory of this registration's
        own, removed once it ends (the files are copies in the artifact store by then), so no
        shared cache grows on the server. With encryption at rest it is a temporary directory
        outside the store; otherwise under it, on the filesystem the copies go to."""
        parent: Path | None = None
        if not self.artifacts.encrypts:
            parent = self.artifacts.root / HUB_CACHE_DIR
            parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="openmaas-hub-", dir=parent) as tmp:
            yield Path(tmp)

    def _check_loadable(
        self, name: str, kind: Detected, spec: VersionSpec, root: Path | None, caller: Principal
    ) -> None:
        # The server's own registrations (the catalog, job outputs) are files it ships or made.
        if self.load_check is None or root is None or caller is SYSTEM or kind.task is None:
            return
        runtime = spec.runtime or kind.runtime
        source = ModelSource.for_directory(
            root, task=kind.task, runtime=runtime, name=name, params=spec.params
        )
        self.load_check(source)

    def _budget(self, spec: VersionSpec, caller: Principal) -> StorageBudget | None:
        """What the target project may still store; None when no quota binds the caller
        (no quota configured, or an admin: the catalog and job outputs register as one)."""
        quota = self.limits.project_storage_bytes
        if quota <= 0 or is_admin(caller):
            return None
        project = caller.project  # a tenant registers into its own project only (`_target`)
        with self.store.db.transaction() as session:
            return StorageBudget(project, quota, rows.stored_bytes(session, project))

    @staticmethod
    def _check_spec(spec: VersionSpec) -> None:
        check_tags(spec.tags)
        check_metrics(spec.metrics)
        check_moderation_params(spec.params)
        if spec.alias is not None:
            check_alias(spec.alias)

    def check_target(self, name: str, spec: VersionSpec, caller: Principal) -> None:
        """Refuse early (before any file is read) a name the caller may not register into:
        the commit checks again under the model's lock, with the same answers."""
        who = require_caller(caller)
        with self.store.db.transaction() as session:
            self._target(session, name, spec, who)

    def _target(
        self, session: Session, name: str, spec: VersionSpec, caller: Principal
    ) -> tuple[str, str]:
        """(project, name) of the model a registration of `name` adds a version to.

        Names are each project's own, so another project's hidden model of the same name is
        no obstacle and nothing about it is revealed: a tenant's bare `name` is its own
        project's model (created if new). A public model of that name is visible, and
        read-only to a tenant (403), as is a catalog name. An admin names the project as
        `project/name` or `spec.project`; a bare name is the model it resolves to (see
        `RegistryStore.find_model`), else a new one in the admin key's project.
        """
        named, bare = split_qualified(name)
        if named is not None and spec.project is not None and named != spec.project:
            raise InvalidRequest(
                f"model {name!r} names project {named!r} but the request says "
                f"{spec.project!r}; give one",
                param="project",
            )
        project = named or spec.project
        candidates = rows.models_named(session, bare)
        if not is_admin(caller):
            if project is not None and project != caller.project:
                raise PermissionDenied(
                    f"a key of project {caller.project!r} registers into its own project only",
                    param="project",
                )
            for row in candidates:
                if row.project == caller.project or row.public:
                    check_changeable(bare, row.project, row.public, caller)
            self.check_unreserved(bare, caller=caller)
            return caller.project, bare
        if project is not None:
            return project, bare
        try:
            return visible_row(candidates, bare, caller).project, bare
        except ModelNotFound:
            return caller.project, bare

    def check_unreserved(self, name: str, *, caller: Principal) -> None:
        """Refuse a non-admin caller a new model under a reserved name."""
        if not is_admin(require_caller(caller)) and name in self.reserved_names:
            raise PermissionDenied(
                f"the model name {name!r} is reserved for the built-in catalog; choose another",
                param="name",
                code="reserved_name",
            )

    def _commit(
        self,
        name: str,
        spec: VersionSpec,
        caller: Principal,
        kind: Detected,
        lineage: Lineage,
        files: tuple[FileEntry, ...],
        location: str | None,
        staged: StagedArtifact | None,
    ) -> ModelVersion:
        assert kind.task is not None  # callers resolve it with require_task first
        actor = spec.created_by or caller.actor
        storage = Storage.EXTERNAL if staged is None else Storage.STORE
        published: str | None = None
        try:
            with self.store.db.transaction() as session:
                project, bare = self._target(session, name, spec, caller)
                model = rows.lock_or_create_model(
                    session, bare, actor, project, public=_public_for(spec, caller)
                )
                if model.public:
                    check_public_name_free(session, model)
                # The model row is locked until commit, so numbers are distinct and gap-free
                # across processes; a failed registration rolls its number back.
                size_bytes = sum(entry.size for entry in files)
                if staged is not None and not is_admin(caller):
                    # Again under the transaction: concurrent uploads of one project add up.
                    quota = self.limits.project_storage_bytes
                    if quota > 0:
                        used = rows.stored_bytes(session, project)
                        StorageBudget(project, quota, used).check(size_bytes)
                model.last_version += 1
                model.updated_at = rows.now()
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
                    params={**kind.params, **spec.params},  # the caller's win
                    metrics={k: float(v) for k, v in spec.metrics.items()},
                    lineage=lineage.to_dict(),
                    manifest=[entry.to_dict() for entry in files],
                    storage=storage.value,
                    location=location,
                    size_bytes=size_bytes,
                    created_at=rows.now(),
                    created_by=actor,
                )
                session.add(row)
                session.flush()
                gated = self._set_alias(session, model, spec, row.version, actor)
                registered = rows.version_entity(session, model, row)
        except BaseException:
            if published is not None:
                self.artifacts.remove(published)
            elif staged is not None:
                self.artifacts.discard(staged.path)
            raise
        self.store.changed(bare)
        if self.on_registered is not None:
            self.on_registered(registered)
        if gated and spec.alias is not None and self.aliases is not None:
            # After the commit: the gate scores the new version against the alias's.
            exact = qualified(registered.project, registered.model)
            try:
                self.aliases.move(
                    exact, spec.alias, registered.version, caller=caller, actor=actor,
                    reason="set at registration",
                )  # fmt: skip
            except GateFailed as exc:
                raise GateFailed(
                    f"{registered.model}:{registered.version} was registered, but alias "
                    f"{spec.alias!r} stays where it was: {exc.message}",
                    param="alias",
                ) from None
            registered = self.store.get_version(exact, registered.version, caller=SYSTEM)
        return registered

    @staticmethod
    def _set_alias(
        session: Session, model: ModelRow, spec: VersionSpec, version: int, actor: str
    ) -> bool:
        """Move the alias inside the registration's transaction; True when the alias has an
        evaluation gate and points at another version (moved after the commit, gated)."""
        if spec.alias is None:
            return False
        if gate_applies(session, model, spec.alias, version):
            return True
        move_alias(session, model, spec.alias, version, actor, "set at registration")
        return False


def _public_for(spec: VersionSpec, caller: Principal) -> bool:
    if spec.public and not is_admin(caller):
        raise PermissionDenied("only an admin key registers a public model", param="public")
    return spec.public


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
