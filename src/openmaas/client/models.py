"""Registered models and their versions: list, edit, delete, register, upload, verify, compare.

Example::

    with Client("http://127.0.0.1:8000") as client:
        v1 = client.upload("sentiment", "models/sentiment", metrics={"acc": 0.91})
        client.register("ner", SpacySource(package="en_core_web_sm"), alias="production")
        client.resolve("sentiment").reference  # sentiment:1
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from openmaas.client.packing import ProgressCallback, is_archive, pack_directory, upload_reader
from openmaas.client.resource import Resource, segment
from openmaas.protocol.registry import (
    CompareOut,
    HubSource,
    LineageIn,
    MetadataEditOut,
    MetadataPatch,
    ModelOut,
    OnnxSource,
    PackageSource,
    PathSource,
    RegisterRequest,
    SpacySource,
    VerifyOut,
    VersionMetadata,
    VersionOut,
)

ServerSource = PathSource | OnnxSource | SpacySource | PackageSource | HubSource


KERAS_SUFFIX = ".keras"  # a Keras 3 model file, uploaded on its own


class ModelsResource(Resource):
    """`/v1/registry/models` and their versions (aliases are in `AliasesResource`)."""

    # -- models --------------------------------------------------------------------------

    def list_models(self) -> list[ModelOut]:
        return self._list("GET", "/v1/registry/models", ModelOut)

    def get_model(self, name: str) -> ModelOut:
        return self._one("GET", model_path(name), ModelOut)

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
    ) -> ModelOut:
        """Edit the model's description and tags; a tag set to None is removed."""
        return self._one("PATCH", model_path(name), ModelOut, json=_patch(description, tags))

    def delete_model(self, name: str) -> None:
        """Delete the model, all its versions and their stored files."""
        self._request("DELETE", model_path(name))

    def model_history(self, name: str) -> list[MetadataEditOut]:
        """Every metadata edit of the model and of its versions, oldest first."""
        return self._list("GET", model_path(name, "/history"), MetadataEditOut)

    # -- registration --------------------------------------------------------------------

    def register(
        self,
        name: str,
        source: ServerSource,
        *,
        task: str | None = None,
        runtime: str | None = None,
        format: str | None = None,  # the API's field name
        description: str = "",
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        lineage: LineageIn | Mapping[str, Any] | None = None,
        alias: str | None = None,
    ) -> VersionOut:
        """Register files the server can read itself as the model's next version.

        `source` is one of `PathSource(path=...)`, `OnnxSource(path=..., tokenizer_path=...)`,
        `SpacySource(package=...)`, `PackageSource(distribution=..., subpath=...)` or
        `HubSource(repo_id=..., revision=...)`. Task, runtime and format are detected from
        the files when omitted; `alias` is pointed at the new version.
        """
        meta = _metadata(task, runtime, format, description, tags, params, metrics, lineage, alias)
        body = RegisterRequest(source=source, **meta.model_dump())
        return self._one(
            "POST", model_path(name, "/versions"), VersionOut, json=body.model_dump(mode="json")
        )

    def upload(
        self,
        name: str,
        path: str | Path,
        *,
        task: str | None = None,
        runtime: str | None = None,
        format: str | None = None,  # the API's field name
        description: str = "",
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        lineage: LineageIn | Mapping[str, Any] | None = None,
        alias: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> VersionOut:
        """Upload a local model directory, .tar.gz or Keras `.keras` file as the model's next
        version.

        A directory is packed into a temporary .tar.gz first (under $TMPDIR, removed
        afterwards); the archive is streamed, never read into memory. `progress` receives
        `UploadProgress` reports for the `pack` and `upload` phases. Raises
        `FileNotFoundError`/`ValueError` for a path that is not a directory or an archive.
        """
        meta = _metadata(task, runtime, format, description, tags, params, metrics, lineage, alias)
        local = Path(path).expanduser()
        if local.is_dir():
            with tempfile.TemporaryDirectory(prefix="openmaas-upload-") as scratch:
                top = local.resolve().name or "model"
                archive = pack_directory(local, Path(scratch) / f"{top}.tar.gz", progress=progress)
                return self._send_archive(name, archive, meta, progress)
        if not local.exists():
            raise FileNotFoundError(f"no such file or directory: {local}")
        if local.is_file() and local.suffix == KERAS_SUFFIX:
            # A Keras model can be one file (TextVectorization inside): sent as a directory.
            with tempfile.TemporaryDirectory(prefix="openmaas-upload-") as scratch:
                folder = Path(scratch) / (local.stem or "model")
                folder.mkdir()
                (folder / local.name).symlink_to(local.resolve())
                archive = pack_directory(folder, Path(scratch) / "model.tar.gz", progress=progress)
                return self._send_archive(name, archive, meta, progress)
        if not (local.is_file() and is_archive(local)):
            raise ValueError(
                f"{local} is neither a directory, a .tar.gz/.tgz/.tar archive nor a .keras file"
            )
        return self._send_archive(name, local, meta, progress)

    def _send_archive(
        self,
        name: str,
        archive: Path,
        meta: VersionMetadata,
        progress: ProgressCallback | None,
    ) -> VersionOut:
        with upload_reader(archive, progress) as reader:
            files = {"file": (archive.name, reader, "application/gzip")}
            data = {"metadata": meta.model_dump_json()}
            return self._one(
                "POST",
                model_path(name, "/versions/upload"),
                VersionOut,
                files=files,
                data=data,
                upload=True,
            )

    # -- versions ------------------------------------------------------------------------

    def list_versions(self, name: str) -> list[VersionOut]:
        return self._list("GET", model_path(name, "/versions"), VersionOut)

    def get_version(self, name: str, version: int) -> VersionOut:
        return self._one("GET", version_path(name, version), VersionOut)

    def update_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
    ) -> VersionOut:
        """Edit a version's description and tags (its files never change)."""
        body = _patch(description, tags)
        return self._one("PATCH", version_path(name, version), VersionOut, json=body)

    def delete_version(self, name: str, version: int) -> None:
        """Delete one version; refused (409) while an alias points at it."""
        self._request("DELETE", version_path(name, version))

    def version_history(self, name: str, version: int) -> list[MetadataEditOut]:
        return self._list("GET", version_path(name, version, "/history"), MetadataEditOut)

    def verify(self, name: str, version: int) -> VerifyOut:
        """Re-hash every stored file of a version against its manifest."""
        return self._one("POST", version_path(name, version, "/verify"), VerifyOut)

    def compare(self, name: str, a: int, b: int) -> CompareOut:
        """Metrics, params, files and lineage of version `a` against version `b`."""
        return self._one("GET", model_path(name, "/compare", a=a, b=b), CompareOut)

    def resolve(self, ref: str) -> VersionOut:
        """The version `name` (production, else newest), `name@alias` or `name:N` means."""
        return self._one("GET", "/v1/registry/resolve", VersionOut, params={"ref": ref})


def model_path(name: str, rest: str = "", **query: str | int) -> str:
    """The registry path of model `name`, then `rest` and `query`. Names are each project's
    own: `project/name` (an admin naming another project's model) travels as `?project=`."""
    project, _, bare = name.rpartition("/")
    if project:
        query = {"project": project, **query}
    path = f"/v1/registry/models/{segment(bare)}{rest}"
    return f"{path}?{urlencode(query)}" if query else path


def version_path(name: str, version: int, rest: str = "") -> str:
    return model_path(name, f"/versions/{segment(version)}{rest}")


def _patch(description: str | None, tags: Mapping[str, str | None] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if description is not None:
        fields["description"] = description
    if tags is not None:
        fields["tags"] = dict(tags)
    # Validated here so a bad edit fails before any request, with pydantic's message.
    return MetadataPatch(**fields).model_dump(mode="json", exclude_unset=True)


def _metadata(
    task: str | None,
    runtime: str | None,
    fmt: str | None,
    description: str,
    tags: Mapping[str, str] | None,
    params: Mapping[str, Any] | None,
    metrics: Mapping[str, float] | None,
    lineage: LineageIn | Mapping[str, Any] | None,
    alias: str | None,
) -> VersionMetadata:
    if lineage is None:
        lineage_in = LineageIn()
    elif isinstance(lineage, LineageIn):
        lineage_in = lineage
    else:
        lineage_in = LineageIn.model_validate(dict(lineage))
    return VersionMetadata(
        task=task,
        runtime=runtime,
        format=fmt,
        description=description,
        tags=dict(tags or {}),
        params=dict(params or {}),
        metrics=dict(metrics or {}),
        lineage=lineage_in,
        alias=alias,
    )
