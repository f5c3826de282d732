"""Version variants: another build of a version that serves in its place (its ONNX export),
stored beside it rather than registered as a version of its own.

A variant's files go through the artifact store as a version's do (copied and hashed in one
pass, encrypted when the store encrypts, published by one rename, read-only); its row names
the version by id, so deleting the version deletes it (the rows by the database's cascade,
the files by `RegistryStore`). The version itself never changes: its files, manifest and
number stay what they were, and `ModelVersion.variants` lists what was built from it.

Example::

    variants = VariantService(store, artifacts)
    variant = variants.add(pin, VariantSpec(kind="onnx", runtime="onnx", job_id=job.id,
                                            params={...}, settings={"atol": 1e-4},
                                            metrics={...}), output_dir, caller=SYSTEM)
    registry.get_version("minilm", 1, caller=SYSTEM).variants  # -> (variant,)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from openmaas.auth.access import require_caller
from openmaas.auth.entities import Principal
from openmaas.errors import VersionNotFound
from openmaas.registry import rows
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.entities import VersionPin, VersionVariant
from openmaas.registry.sources import plan_directory
from openmaas.registry.store import RegistryStore, require_admin
from openmaas.store.tables import ModelRow, VersionRow, VersionVariantRow


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """What is recorded with a variant's files."""

    kind: str  # the method that built it: "onnx"
    runtime: str  # the runtime that loads its files
    job_id: str  # the job that built it (publishing it again returns this one)
    params: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)


class VariantService:
    """Adds variants to versions; reading them is `ModelVersion.variants`, opening their
    files `ModelFiles.open_variant`."""

    def __init__(self, store: RegistryStore, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts

    def add(
        self, pin: VersionPin, spec: VariantSpec, directory: Path, *, caller: Principal
    ) -> VersionVariant:
        """Store the files under `directory` as the pinned version's variant of `spec.kind`
        (replacing an older one of that kind). `VersionNotFound` when the version is gone.
        The server's own work (a job's publish step): admins only."""
        who = require_caller(caller)
        require_admin(who, "adding a version variant")
        done = self._by_job(spec.job_id)
        if done is not None:
            return done  # a worker that died after storing it, publishing again
        staged = self.artifacts.stage_files(plan_directory(directory).files)
        published: str | None = None
        try:
            with self.store.db.transaction() as session:
                version = session.get(VersionRow, pin.version_id)
                model = session.get(ModelRow, version.model_id) if version is not None else None
                if (
                    version is None
                    or model is None
                    or (model.name, version.version) != (pin.model, pin.version)
                    or rows.version_digest(version) != pin.digest
                ):
                    raise VersionNotFound(
                        f"model version {pin.reference} is gone: it was deleted since the "
                        "variant's job was created",
                        param="model",
                    )
                replaced = session.scalar(
                    select(VersionVariantRow).where(
                        VersionVariantRow.version_id == version.id,
                        VersionVariantRow.kind == spec.kind,
                    )
                )
                old_location = replaced.location if replaced is not None else None
                if replaced is not None:
                    session.delete(replaced)
                    session.flush()
                published = self.artifacts.publish(staged)
                row = VersionVariantRow(
                    version_id=version.id,
                    kind=spec.kind,
                    runtime=spec.runtime,
                    params=dict(spec.params),
                    settings=dict(spec.settings),
                    metrics={name: float(value) for name, value in spec.metrics.items()},
                    manifest=[entry.to_dict() for entry in staged.files],
                    location=published,
                    size_bytes=staged.size_bytes,
                    job_id=spec.job_id,
                    created_at=rows.now(),
                )
                session.add(row)
                session.flush()
                variant = rows.variant_entity(row)
                name = model.name
        except BaseException:
            if published is not None:
                self.artifacts.remove(published)
            else:
                self.artifacts.discard(staged.path)
            raise
        if old_location is not None:
            self.artifacts.remove(old_location)
        self.store.changed(name)  # this process's router sees it at once
        return variant

    def _by_job(self, job_id: str) -> VersionVariant | None:
        with self.store.db.transaction() as session:
            row = session.scalar(
                select(VersionVariantRow).where(VersionVariantRow.job_id == job_id)
            )
            return rows.variant_entity(row) if row is not None else None
