"""Wire shapes of the registry API, shared by the server and the Python SDK.

Example::

    body = RegisterRequest(source=SpacySource(package="en_core_web_sm"), alias="staging")
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from openmaas.protocol.common import MAX_ROW_ID, Response, Schema

# Names an uploaded model directory never carries: the SDK leaves them out of the archive it
# packs, and the server skips them in any archive or directory it takes in.
SKIPPED_NAMES = frozenset({".git", "__pycache__", ".DS_Store", ".ipynb_checkpoints", ".cache"})

# What a source names (a path, a package, a repository): an empty one names nothing.
SourceName = Annotated[str, Field(min_length=1)]

# -- requests ------------------------------------------------------------------------------


class PathSource(Schema):
    """A model directory (or a single .onnx file) on the server's filesystem."""

    type: Literal["path"] = "path"
    path: SourceName


class OnnxSource(Schema):
    """An .onnx file plus the directory holding its tokenizer, both on the server."""

    type: Literal["onnx"] = "onnx"
    path: SourceName
    tokenizer_path: str | None = None


class SpacySource(Schema):
    """An installed spaCy pipeline package, by package name."""

    type: Literal["spacy"] = "spacy"
    package: SourceName


class PackageSource(Schema):
    """An installed Python distribution that ships a model directory."""

    type: Literal["package"] = "package"
    distribution: SourceName
    subpath: str | None = None


class HubSource(Schema):
    """A Hugging Face Hub repository (the server needs network access)."""

    type: Literal["hub"] = "hub"
    repo_id: SourceName
    revision: str | None = None


Source = Annotated[
    PathSource | OnnxSource | SpacySource | PackageSource | HubSource,
    Field(discriminator="type"),
]


class LineageIn(Schema):
    source: dict[str, Any] = Field(default_factory=dict)
    parent_version: Annotated[int, Field(ge=1, le=MAX_ROW_ID)] | None = None
    transform: str | None = None
    dataset_id: str | None = None
    dataset_sha256: str | None = None
    job_id: str | None = None


class VersionMetadata(Schema):
    """Everything about a new version except where its files come from."""

    task: str | None = Field(default=None, description="Detected from the files when omitted.")
    runtime: str | None = None
    format: str | None = None
    description: str = Field(default="", max_length=10_000)
    tags: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: LineageIn = Field(default_factory=LineageIn)
    alias: str | None = Field(default=None, description="Alias to point at the new version.")


class RegisterRequest(VersionMetadata):
    source: Source


class MetadataPatch(Schema):
    description: str | None = Field(default=None, max_length=10_000)
    tags: dict[str, str | None] | None = Field(
        default=None, description="Merged into the current tags; a null value removes a tag."
    )


class AliasRequest(Schema):
    version: int = Field(ge=1, le=MAX_ROW_ID)
    reason: str = Field(default="", max_length=2_000)
    force: bool = Field(
        default=False,
        description="Move past the alias's evaluation gate (admin keys, with a reason).",
    )


class ReasonRequest(Schema):
    reason: str = Field(default="", max_length=2_000)


# -- responses -----------------------------------------------------------------------------


class FileOut(Response):
    path: str
    size: int
    sha256: str


class VariantOut(Response):
    """Another build of a version that serves in its place (its ONNX export)."""

    kind: str
    runtime: str
    metrics: dict[str, float]
    files: list[FileOut]
    size_bytes: int
    job_id: str
    created_at: datetime


class LineageOut(Response):
    source: dict[str, Any]
    parent_version: int | None
    transform: str | None
    dataset_id: str | None
    dataset_sha256: str | None
    job_id: str | None


class ModelOut(Response):
    object: Literal["registered_model"] = "registered_model"
    name: str
    description: str
    tags: dict[str, str]
    latest_version: int | None
    aliases: dict[str, int]
    created_at: datetime
    updated_at: datetime
    created_by: str
    # Names are each project's own: `project/name` names this model exactly.
    project: str = "default"
    public: bool = False


class VersionOut(Response):
    object: Literal["model_version"] = "model_version"
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
    lineage: LineageOut
    files: list[FileOut]
    storage: str
    size_bytes: int
    aliases: list[str]
    created_at: datetime
    created_by: str
    project: str = "default"
    public: bool = False
    # Other builds that serve in its place (its ONNX export: issue 14's fast default).
    variants: list[VariantOut] = Field(default_factory=list)
    # When loaded: the runtime it runs on (`onnx` when its ONNX variant serves it).
    served_by: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.model}:{self.version}"


class AliasEventOut(Response):
    model: str
    alias: str
    action: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    created_at: datetime
    # On the answer to a move only: the evaluation gate's scores (or that it was forced).
    gate: dict[str, Any] | None = None


class AliasMoveOut(Response):
    """The result of an alias change; `event` is null when nothing moved."""

    model: str
    alias: str
    version: int | None
    event: AliasEventOut | None


class MetadataEditOut(Response):
    model: str
    version: int | None
    before: dict[str, Any]
    after: dict[str, Any]
    actor: str
    created_at: datetime


class VerifyProblemOut(Response):
    path: str
    problem: str


class VerifyOut(Response):
    model: str
    version: int
    ok: bool
    files_checked: int
    problems: list[VerifyProblemOut]


class FilesDiffOut(Response):
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: int


class CompareOut(Response):
    model: str
    a: int
    b: int
    fields: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, float | None]]
    params: dict[str, dict[str, Any]]
    files: FilesDiffOut
    lineage: dict[str, dict[str, Any]]
