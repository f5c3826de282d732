"""The Python SDK: every admin call of an OpenMaaS server, with typed results.

Example::

    from openmaas import APIError, Client
    from openmaas.client import SpacySource

    with Client("http://127.0.0.1:8000") as client:
        v1 = client.upload("sentiment", "models/sentiment", metrics={"acc": 0.91})
        client.register("ner", SpacySource(package="en_core_web_sm"), alias="production")
        client.set_alias("sentiment", "production", v1.version, reason="first release")
        print(client.resolve("sentiment@production").reference)  # sentiment:1
        try:
            client.get_model("missing")
        except APIError as exc:
            print(exc.status_code, exc.code)  # 404 model_not_found
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from openmaas.catalog.schemas import CatalogEntryOut
from openmaas.packing import (
    ProgressCallback,
    ProgressReader,
    UploadProgress,
    is_archive,
    pack_directory,
)
from openmaas.registry.schemas import (
    AliasEventOut,
    AliasMoveOut,
    CompareOut,
    HubSource,
    LineageIn,
    ListOut,
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
from openmaas.transport import APIError, ConnectionFailed, send

__all__ = [
    "APIError",
    "CatalogEntryOut",
    "Client",
    "ConnectionFailed",
    "HubSource",
    "OnnxSource",
    "PackageSource",
    "PathSource",
    "ServerSource",
    "SpacySource",
    "UploadProgress",
]

DEFAULT_URL = "http://127.0.0.1:8000"
# Generous on purpose: registration and verification hash every file on the server before
# the response comes, which takes a while for multi-gigabyte models.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)

ServerSource = PathSource | OnnxSource | SpacySource | PackageSource | HubSource
M = TypeVar("M", bound=BaseModel)


def _segment(value: str | int) -> str:
    # Names travel in the path: escape everything, so "a/b" stays one segment, and spell
    # out dot segments, which URL normalisation would otherwise resolve away.
    text = str(value)
    if text in (".", ".."):
        return text.replace(".", "%2E")
    return quote(text, safe="")


class Client:
    """A synchronous client for one OpenMaaS server; use it as a context manager.

    `api_key` is sent as `Authorization: Bearer <key>`. Every non-2xx answer raises
    `APIError`; a server that cannot be reached raises `ConnectionFailed`::

        with Client("http://127.0.0.1:8000", api_key="sk-...") as client:
            for model in client.list_models():
                print(model.name, model.latest_version, model.aliases)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": "openmaas-python"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- models --------------------------------------------------------------------------

    def list_models(self) -> list[ModelOut]:
        return self._list("GET", "/v1/registry/models", ModelOut)

    def get_model(self, name: str) -> ModelOut:
        return self._one("GET", _model_path(name), ModelOut)

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
    ) -> ModelOut:
        """Edit the model's description and tags; a tag set to None is removed."""
        return self._one("PATCH", _model_path(name), ModelOut, json=_patch(description, tags))

    def delete_model(self, name: str) -> None:
        """Delete the model, all its versions and their stored files."""
        self._request("DELETE", _model_path(name))

    def model_history(self, name: str) -> list[MetadataEditOut]:
        """Every metadata edit of the model and of its versions, oldest first."""
        return self._list("GET", f"{_model_path(name)}/history", MetadataEditOut)

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
            "POST", f"{_model_path(name)}/versions", VersionOut, json=body.model_dump(mode="json")
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
        """Upload a local model directory or .tar.gz as the model's next version.

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
        if not (local.is_file() and is_archive(local)):
            raise ValueError(f"{local} is neither a directory nor a .tar.gz/.tgz/.tar archive")
        return self._send_archive(name, local, meta, progress)

    def _send_archive(
        self,
        name: str,
        archive: Path,
        meta: VersionMetadata,
        progress: ProgressCallback | None,
    ) -> VersionOut:
        total = archive.stat().st_size
        sent = 0

        def on_read(size: int) -> None:
            nonlocal sent
            sent += size
            if progress is not None:
                progress(UploadProgress("upload", min(sent, total), total))

        if progress is not None:
            progress(UploadProgress("upload", 0, total))
        with archive.open("rb") as handle:
            reader = ProgressReader(handle, on_read)
            files = {"file": (archive.name, reader, "application/gzip")}
            data = {"metadata": meta.model_dump_json()}
            return self._one(
                "POST",
                f"{_model_path(name)}/versions/upload",
                VersionOut,
                files=files,
                data=data,
                upload=True,
            )

    # -- versions ------------------------------------------------------------------------

    def list_versions(self, name: str) -> list[VersionOut]:
        return self._list("GET", f"{_model_path(name)}/versions", VersionOut)

    def get_version(self, name: str, version: int) -> VersionOut:
        return self._one("GET", _version_path(name, version), VersionOut)

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
        return self._one("PATCH", _version_path(name, version), VersionOut, json=body)

    def delete_version(self, name: str, version: int) -> None:
        """Delete one version; refused (409) while an alias points at it."""
        self._request("DELETE", _version_path(name, version))

    def version_history(self, name: str, version: int) -> list[MetadataEditOut]:
        return self._list("GET", f"{_version_path(name, version)}/history", MetadataEditOut)

    def verify(self, name: str, version: int) -> VerifyOut:
        """Re-hash every stored file of a version against its manifest."""
        return self._one("POST", f"{_version_path(name, version)}/verify", VerifyOut)

    def compare(self, name: str, a: int, b: int) -> CompareOut:
        """Metrics, params, files and lineage of version `a` against version `b`."""
        return self._one("GET", f"{_model_path(name)}/compare", CompareOut, params={"a": a, "b": b})

    def resolve(self, ref: str) -> VersionOut:
        """The version `name` (production, else newest), `name@alias` or `name:N` means."""
        return self._one("GET", "/v1/registry/resolve", VersionOut, params={"ref": ref})

    # -- aliases -------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        response = self._request("GET", f"{_model_path(name)}/aliases")
        data = response.json()
        return {str(alias): int(version) for alias, version in data.items()}

    def set_alias(self, name: str, alias: str, version: int, reason: str = "") -> AliasMoveOut:
        """Point `alias` at `version`; the result's `event` is None when nothing moved."""
        body = {"version": version, "reason": reason}
        return self._one("PUT", _alias_path(name, alias), AliasMoveOut, json=body)

    def delete_alias(self, name: str, alias: str, reason: str = "") -> AliasMoveOut:
        params = {"reason": reason} if reason else None
        return self._one("DELETE", _alias_path(name, alias), AliasMoveOut, params=params)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEventOut]:
        """Alias moves of the model, oldest first; only those of `alias` when given."""
        if alias is None:
            return self._list("GET", f"{_model_path(name)}/aliases/history", AliasEventOut)
        return self._list("GET", f"{_alias_path(name, alias)}/history", AliasEventOut)

    def rollback(self, name: str, alias: str, reason: str = "") -> AliasMoveOut:
        """Move `alias` back to its previous target (409 `nothing_to_roll_back` if none)."""
        path = f"{_alias_path(name, alias)}/rollback"
        return self._one("POST", path, AliasMoveOut, json={"reason": reason})

    # -- catalog -------------------------------------------------------------------------

    def catalog(self) -> list[CatalogEntryOut]:
        """The built-in catalog: which models this server can offer, and whether it does."""
        return self._list("GET", "/v1/catalog", CatalogEntryOut)

    def catalog_entry(self, name: str) -> CatalogEntryOut:
        return self._one("GET", f"/v1/catalog/{_segment(name)}", CatalogEntryOut)

    # -- plumbing ------------------------------------------------------------------------

    def _one(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        return model.model_validate(self._request(method, path, **kwargs).json())

    def _list(self, method: str, path: str, model: type[M], **kwargs: Any) -> list[M]:
        page = ListOut[Any].model_validate(self._request(method, path, **kwargs).json())
        return [model.model_validate(item) for item in page.data]

    def _request(
        self, method: str, path: str, *, upload: bool = False, **kwargs: Any
    ) -> httpx.Response:
        return send(self._http, method, path, upload=upload, **kwargs)


def _model_path(name: str) -> str:
    return f"/v1/registry/models/{_segment(name)}"


def _version_path(name: str, version: int) -> str:
    return f"{_model_path(name)}/versions/{_segment(version)}"


def _alias_path(name: str, alias: str) -> str:
    return f"{_model_path(name)}/aliases/{_segment(alias)}"


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
