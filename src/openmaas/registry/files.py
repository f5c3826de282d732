"""A version's files: opened for loaders (decrypted to a private copy when encrypted at
rest), verified against the manifest recorded at registration, listed for maintenance.

Example::

    files = ModelFiles(store, aliases, artifacts)
    with files.open("minilm@production", caller=principal) as opened:
        model = runtime.load(ModelSource.from_version(opened.version, opened.directory), o)
    files.verify("minilm", 1, caller=principal).ok  # -> True
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from openmaas.auth.access import require_caller
from openmaas.auth.entities import Principal
from openmaas.errors import ArtifactCorrupted, OpenMaaSError
from openmaas.registry.aliases import AliasService
from openmaas.registry.artifacts import ArtifactStore, Progress, verify_files
from openmaas.registry.entities import (
    ModelVersion,
    Storage,
    VerifyProblem,
    VerifyReport,
    VersionPin,
    VersionVariant,
)
from openmaas.registry.intake import walk_directory
from openmaas.registry.names import qualified
from openmaas.registry.store import RegistryStore, require_admin


@dataclass(frozen=True, slots=True)
class OpenedVersion:
    """A version's files as plaintext on disk. When they are a decrypted copy (the version is
    encrypted at rest), `close()` deletes it; otherwise it does nothing.

    Example::

        with registry.open_files("minilm", caller=SYSTEM) as opened:
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


class ModelFiles:
    """Opens and verifies the files of registered versions.

    Example::

        files = ModelFiles(store, aliases, artifacts)
        files.start()  # on start: sweeps what interrupted registrations left behind
        version, directory = files.open_stored("minilm:1", caller=principal)
    """

    def __init__(
        self, store: RegistryStore, aliases: AliasService, artifacts: ArtifactStore
    ) -> None:
        self.store = store
        self.aliases = aliases
        self.artifacts = artifacts

    def start(self) -> None:
        self.artifacts.start()
        self.artifacts.sweep_orphans(self.store.stored_locations())

    def root_of(self, version: ModelVersion, location: str) -> Path:
        if version.storage == Storage.EXTERNAL.value:
            return Path(location)
        return self.artifacts.path_of(location)

    def verify(
        self, name: str, version: int, *, caller: Principal, progress: Progress | None = None
    ) -> VerifyReport:
        """Re-hash every file of a version against the manifest recorded at registration
        (decrypting files encrypted at rest). Raises `EncryptionKeyError` when the configured
        key does not open them. Verifying is maintenance of a model: its owners (and admins)
        do it; to other projects a public model is read-only."""
        who = require_caller(caller)
        entity, location = self.store.version_with_location(name, version, caller=who, change=True)
        return self._verify(entity, self.root_of(entity, location), progress)

    def open(self, reference: str, *, caller: Principal, verify: bool = True) -> OpenedVersion:
        """Resolve a reference to its files as plaintext on disk, hash-checked (for loaders).

        A plaintext version opens where it is stored. A version encrypted at rest is
        decrypted into a private scratch directory (in memory when there is room) and
        checked in the same pass, whatever `verify` says; `close()` deletes that copy, which
        a loader does as soon as its runtime has read the files.
        """
        entity, root = self._locate(reference, require_caller(caller))
        return self._open(entity, root, verify)

    def open_pinned(
        self, pin: VersionPin, *, caller: Principal, verify: bool = True
    ) -> OpenedVersion:
        """`open` for exactly the pinned version; `VersionNotFound` when it is gone or
        `caller` may not see it (a name registered again is never followed)."""
        entity, location = self.store.pinned_with_location(pin, caller=require_caller(caller))
        return self._open(entity, self.root_of(entity, location), verify)

    def open_variant(
        self, version: ModelVersion, variant: VersionVariant, *, caller: Principal
    ) -> OpenedVersion:
        """A variant's files as `open` gives a version's (hash-checked against the variant's
        own manifest, decrypted to a private copy when encrypted at rest). The opened entity
        is the version as the variant serves it: its runtime, params and files."""
        require_caller(caller)
        location = self.store.variant_location(variant.id)
        entity = replace(
            version,
            runtime=variant.runtime,
            params=dict(variant.params),
            files=variant.files,
            size_bytes=variant.size_bytes,
            storage=Storage.STORE.value,
            variants=(),
        )
        return self._open(entity, self.artifacts.path_of(location), verify=True)

    def _open(self, entity: ModelVersion, root: Path, verify: bool) -> OpenedVersion:
        if not self._encrypted_at_rest(entity, root):
            if verify:
                _require_intact(entity, self._verify(entity, root).problems)
            return OpenedVersion(entity, root)
        scratch = self.artifacts.new_scratch(entity.size_bytes)
        try:
            problems = self.artifacts.copy_plaintext(root, entity.files, scratch)
            _require_intact(entity, [*problems, *self._unexpected_files(entity, root)])
        except BaseException:
            self.artifacts.discard(scratch)
            raise
        return OpenedVersion(entity, scratch, decrypted=True)

    def open_stored(
        self, reference: str, *, caller: Principal, verify: bool = True
    ) -> tuple[ModelVersion, Path]:
        """Resolve a reference to its stored directory, re-checking hashes first.

        For plaintext versions only: the stored files of a version encrypted at rest are
        ciphertext, so it raises for one (loaders use `open`, which decrypts a copy).
        """
        entity, root = self._locate(reference, require_caller(caller))
        if self._encrypted_at_rest(entity, root):
            raise OpenMaaSError(
                f"{entity.model}:{entity.version} is encrypted at rest: its stored files are "
                "ciphertext; open it with ModelFiles.open(), which decrypts a copy"
            )
        if verify:
            _require_intact(entity, self._verify(entity, root).problems)
        return entity, root

    def stored_versions(self, *, caller: Principal) -> list[tuple[ModelVersion, Path]]:
        """Every version whose files the artifact store owns, with their directory (for
        maintenance such as key rotation; admins only)."""
        who = require_caller(caller)
        require_admin(who, "listing every stored version")
        return [
            (version, self.artifacts.path_of(location))
            for version, location in self.store.stored_version_rows()
        ]

    def stored_variants(
        self, *, caller: Principal
    ) -> list[tuple[ModelVersion, VersionVariant, Path]]:
        """Every version variant (its ONNX export) with its directory in the artifact store,
        for maintenance such as key rotation; admins only."""
        who = require_caller(caller)
        require_admin(who, "listing every stored version variant")
        return [
            (version, variant, self.artifacts.path_of(self.store.variant_location(variant.id)))
            for version, _ in self.store.stored_version_rows()
            for variant in version.variants
        ]

    def _verify(
        self, entity: ModelVersion, root: Path, progress: Progress | None = None
    ) -> VerifyReport:
        problems = verify_files(root, entity.files, progress, keys=self.artifacts.keys)
        problems += self._unexpected_files(entity, root)
        return VerifyReport(
            model=entity.model,
            version=entity.version,
            files_checked=len(entity.files),
            problems=tuple(problems),
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

    def _locate(self, reference: str, caller: Principal) -> tuple[ModelVersion, Path]:
        entity = self.aliases.resolve(reference, caller=caller)
        exact = qualified(entity.project, entity.model)
        _, location = self.store.version_with_location(exact, entity.version, caller=caller)
        return entity, self.root_of(entity, location)

    def _encrypted_at_rest(self, entity: ModelVersion, root: Path) -> bool:
        # Per file: a store that got a key later, or an interrupted rotation, mixes both.
        if entity.storage != Storage.STORE.value:
            return False  # recorded in place: never copied, so never encrypted
        paths = (root / f.path for f in entity.files)
        return any(path.is_file() and self.artifacts.is_encrypted(path) for path in paths)


def _require_intact(entity: ModelVersion, problems: Sequence[VerifyProblem]) -> None:
    missing = {p.path for p in problems if p.problem == "missing"}
    if (
        entity.storage == Storage.STORE.value
        and missing
        and missing >= {f.path for f in entity.files}
    ):
        # Not one file there: a server whose store is not the one the database's other
        # servers write to (a replica with its own artifacts dir), rather than damage.
        raise ArtifactCorrupted(
            f"{entity.model}:{entity.version}: none of its {len(entity.files)} files is in this "
            "server's artifact store; every server on one database must use the same store "
            "(one OPENMAAS_ARTIFACTS_URL, or one OPENMAAS_ARTIFACTS_DIR they all reach)"
        )
    if problems:
        first = problems[0]
        raise ArtifactCorrupted(
            f"{entity.model}:{entity.version}: file {first.path!r} failed verification "
            f"({first.problem}); the stored artifact no longer matches its manifest"
        )
