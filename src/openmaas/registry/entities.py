"""What the registry hands out: frozen records, independent of the SQL rows behind them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class VersionStatus(StrEnum):
    READY = "ready"


class Storage(StrEnum):
    """Where a version's files live: copied into the artifact store, or referenced in place
    (an installed package registered by the catalog; its hashes are still verified)."""

    STORE = "store"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # relative, POSIX separators
    size: int  # bytes
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a version came from. Unknown fields stay None."""

    source: dict[str, Any] = field(default_factory=dict)
    parent_version: int | None = None
    transform: str | None = None
    dataset_id: str | None = None
    dataset_sha256: str | None = None
    job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": dict(self.source),
            "parent_version": self.parent_version,
            "transform": self.transform,
            "dataset_id": self.dataset_id,
            "dataset_sha256": self.dataset_sha256,
            "job_id": self.job_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lineage:
        return cls(
            source=dict(data.get("source") or {}),
            parent_version=data.get("parent_version"),
            transform=data.get("transform"),
            dataset_id=data.get("dataset_id"),
            dataset_sha256=data.get("dataset_sha256"),
            job_id=data.get("job_id"),
        )


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    name: str
    description: str
    tags: dict[str, str]
    latest_version: int | None
    aliases: dict[str, int]
    created_at: datetime
    updated_at: datetime
    created_by: str
    project: str = "default"  # the tenant that owns it
    public: bool = False  # visible to every project (the built-in catalog is)


@dataclass(frozen=True, slots=True)
class VersionVariant:
    """Another build of a version that may serve in its place: the ONNX export an
    optimization job made of it (`kind` is the job's method). It is no version of its own:
    it has no number, is never addressed, and is deleted with its version."""

    id: int
    kind: str  # "onnx"
    runtime: str  # what loads `files`
    params: dict[str, Any]  # the params `runtime` loads them with
    settings: dict[str, Any]  # the method's settings in the job (its `atol`)
    metrics: dict[str, float]  # what the job measured against the version
    files: tuple[FileEntry, ...]
    size_bytes: int
    job_id: str
    created_at: datetime

    @property
    def within_tolerance(self) -> bool:
        """Whether the export matched the version within the job's `atol` (a job whose
        export did not stores no variant; this holds the figures to it again)."""
        difference = self.metrics.get("export_max_abs_difference")
        atol = self.settings.get("atol")
        return difference is not None and atol is not None and difference <= float(atol)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    model: str
    version: int
    task: str
    runtime: str
    format: str
    status: str
    description: str
    tags: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]
    lineage: Lineage
    files: tuple[FileEntry, ...]
    storage: str
    size_bytes: int
    aliases: tuple[str, ...]
    created_at: datetime
    created_by: str
    project: str = "default"  # the owning model's project and visibility
    public: bool = False
    # Other builds that may serve it in its place (its ONNX export), oldest first.
    variants: tuple[VersionVariant, ...] = ()


@dataclass(frozen=True, slots=True)
class VersionPin:
    """One version, exactly: its row id and a digest of where its files are and what they
    hold, besides its `name:version`. A name deleted and registered again (by another
    project, say) has new rows and files, so a pin never follows it. Jobs record their base
    model this way when they are created and open that version, or nothing, when they run."""

    model: str
    version: int
    version_id: int
    digest: str  # sha256 of the version's location and manifest

    @property
    def reference(self) -> str:
        return f"{self.model}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "version_id": self.version_id,
            "digest": self.digest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionPin:
        return cls(
            model=str(data["model"]),
            version=int(data["version"]),
            version_id=int(data["version_id"]),
            digest=str(data["digest"]),
        )


@dataclass(frozen=True, slots=True)
class AliasEvent:
    model: str
    alias: str
    action: str  # set | move | delete | rollback
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    created_at: datetime
    # The evaluation gate's verdict on this move (scores, or forced), when the alias has one.
    gate: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class MetadataEdit:
    model: str
    version: int | None
    before: dict[str, Any]
    after: dict[str, Any]
    actor: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    path: str
    problem: str  # missing | size_mismatch | hash_mismatch | unexpected


@dataclass(frozen=True, slots=True)
class VerifyReport:
    model: str
    version: int
    files_checked: int
    problems: tuple[VerifyProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class VersionComparison:
    model: str
    a: int
    b: int
    metrics: dict[str, dict[str, float | None]]  # name -> {a, b, delta}
    params: dict[str, dict[str, Any]]  # changed/added/removed keys -> {a, b}
    files_added: tuple[str, ...]
    files_removed: tuple[str, ...]
    files_changed: tuple[str, ...]
    files_unchanged: int
    lineage: dict[str, dict[str, Any]]  # {"a": ..., "b": ...}
    fields: dict[str, dict[str, Any]]  # task/runtime/format differences
