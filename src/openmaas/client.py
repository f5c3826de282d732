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

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from openmaas.packing import (
    ProgressCallback,
    ProgressReader,
    UploadProgress,
    is_archive,
    pack_directory,
)
from openmaas.protocol.admin import CreatedKeyOut, KeyOut, ProjectOut, WhoAmIOut
from openmaas.protocol.catalog import CatalogEntryOut
from openmaas.protocol.common import ListOut
from openmaas.protocol.datasets import (
    DatasetDeletedOut,
    DatasetOut,
    DatasetSplitOut,
    DatasetSummaryOut,
)
from openmaas.protocol.metering import AuditListOut, UsageReportOut
from openmaas.protocol.registry import (
    AliasEventOut,
    AliasMoveOut,
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
from openmaas.protocol.training import (
    EarlyStoppingIn,
    PageOut,
    RecipeOut,
    TrainingCheckpointOut,
    TrainingEventOut,
    TrainingJobCreate,
    TrainingJobOut,
    TrainingJobUpdate,
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
        api_key = api_key if api_key is not None else os.environ.get("OPENMAAS_API_KEY")
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
        with _upload_reader(archive, progress) as reader:
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

    # -- projects and keys (admin) -------------------------------------------------------

    def create_project(
        self, name: str, description: str = "", limits: Mapping[str, int | None] | None = None
    ) -> ProjectOut:
        body = {"name": name, "description": description, "limits": dict(limits or {})}
        return self._one("POST", "/v1/projects", ProjectOut, json=body)

    def list_projects(self) -> list[ProjectOut]:
        return self._list("GET", "/v1/projects", ProjectOut)

    def set_project_limits(self, name: str, limits: Mapping[str, int | None]) -> ProjectOut:
        """Replace a project's rate limits and quotas; fields left out become unlimited."""
        path = f"/v1/projects/{_segment(name)}/limits"
        return self._one("PUT", path, ProjectOut, json={"limits": dict(limits)})

    def create_key(
        self,
        name: str,
        scopes: list[str],
        project: str = "default",
        expires_at: datetime | None = None,
        limits: Mapping[str, int | None] | None = None,
    ) -> CreatedKeyOut:
        """Create an API key; `.key` in the answer is its only copy."""
        body: dict[str, Any] = {
            "name": name,
            "scopes": scopes,
            "project": project,
            "limits": dict(limits or {}),
        }
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        return self._one("POST", "/v1/keys", CreatedKeyOut, json=body)

    def list_keys(self, project: str | None = None) -> list[KeyOut]:
        params = {"project": project} if project else {}
        return self._list("GET", "/v1/keys", KeyOut, params=params)

    def revoke_key(self, key_id: int) -> KeyOut:
        return self._one("POST", f"/v1/keys/{_segment(key_id)}/revoke", KeyOut)

    def set_key_limits(self, key_id: int, limits: Mapping[str, int | None]) -> KeyOut:
        """Replace a key's own overrides of its project's limits."""
        path = f"/v1/keys/{_segment(key_id)}/limits"
        return self._one("PUT", path, KeyOut, json={"limits": dict(limits)})

    def whoami(self) -> WhoAmIOut:
        """The project and scopes of the key this client sends."""
        return self._one("GET", "/v1/keys/self", WhoAmIOut)

    # -- datasets ------------------------------------------------------------------------

    def upload_dataset(
        self,
        path: str | Path,
        *,
        format: str | None = None,  # the API's field name
        text_column: str | None = None,
        label_column: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> DatasetOut:
        """Upload a JSONL, CSV, TSV or CoNLL file as a training dataset (streamed).

        The answer carries the inferred schema, the statistics and the validation report; a
        file with problems comes back with `status == "error"` and every problem by line. One
        that cannot be read at all raises `APIError` (400 `invalid_file`), one too large 413.
        `progress` receives `UploadProgress("upload", ...)` reports.
        """
        local = Path(path).expanduser()
        if not local.is_file():
            raise FileNotFoundError(f"no such file: {local}")
        fields = {"format": format, "text_column": text_column, "label_column": label_column}
        data = {name: value for name, value in fields.items() if value}
        with _upload_reader(local, progress) as reader:
            files = {"file": (local.name, reader, "application/octet-stream")}
            return self._one(
                "POST", "/v1/datasets", DatasetOut, files=files, data=data, upload=True
            )

    def list_datasets(self) -> list[DatasetSummaryOut]:
        """Your project's datasets (every project's for an admin key), newest first."""
        return self._list("GET", "/v1/datasets", DatasetSummaryOut)

    def get_dataset(self, dataset_id: str) -> DatasetOut:
        return self._one("GET", f"/v1/datasets/{_segment(dataset_id)}", DatasetOut)

    def dataset_split(
        self,
        dataset_id: str,
        *,
        seed: int = 0,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
    ) -> DatasetSplitOut:
        """Rows, labels and content hash of the train/validation/test split a seed gives."""
        params = {"seed": seed, "ratios": ",".join(str(float(ratio)) for ratio in ratios)}
        path = f"/v1/datasets/{_segment(dataset_id)}/split"
        return self._one("GET", path, DatasetSplitOut, params=params)

    def dataset_content(self, dataset_id: str) -> bytes:
        """The file's bytes as uploaded."""
        return self._request("GET", f"/v1/files/{_segment(dataset_id)}/content").content

    def delete_dataset(self, dataset_id: str) -> DatasetDeletedOut:
        return self._one("DELETE", f"/v1/datasets/{_segment(dataset_id)}", DatasetDeletedOut)

    # -- catalog -------------------------------------------------------------------------

    def catalog(self) -> list[CatalogEntryOut]:
        """The built-in catalog: which models this server can offer, and whether it does."""
        return self._list("GET", "/v1/catalog", CatalogEntryOut)

    def catalog_entry(self, name: str) -> CatalogEntryOut:
        return self._one("GET", f"/v1/catalog/{_segment(name)}", CatalogEntryOut)

    # -- training jobs -------------------------------------------------------------------

    def recipes(self) -> list[RecipeOut]:
        """The recipes the server trains with: tasks, base model needs, defaults."""
        return self._list("GET", "/v1/training/recipes", RecipeOut)

    def create_training_job(
        self,
        recipe: str,
        training_file: str,
        *,
        validation_file: str | None = None,
        task: str | None = None,
        base_model: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        early_stopping: EarlyStoppingIn | Mapping[str, Any] | None = None,
        class_imbalance: str | None = None,
        validation_split: float = 0.1,
        test_split: float = 0.1,
        seed: int | None = None,
        suffix: str | None = None,
        model_name: str | None = None,
        alias: str | None = None,
    ) -> TrainingJobOut:
        """Queue a training job; on success it registers `model_name` (default
        `<suffix or recipe>-<short id>`) with test-split metrics and moves `alias`."""
        body = TrainingJobCreate.model_validate(
            {
                "recipe": recipe,
                "training_file": training_file,
                "validation_file": validation_file,
                "task": task,
                "base_model": base_model,
                "hyperparameters": dict(hyperparameters or {}),
                "early_stopping": early_stopping,
                "class_imbalance": class_imbalance,
                "validation_split": validation_split,
                "test_split": test_split,
                "seed": seed,
                "suffix": suffix,
                "model_name": model_name,
                "alias": alias,
            }
        )
        payload = body.model_dump(mode="json", exclude_none=True)
        return self._one("POST", "/v1/training/jobs", TrainingJobOut, json=payload)

    def list_training_jobs(
        self, *, after: str | None = None, limit: int = 20
    ) -> PageOut[TrainingJobOut]:
        """Newest first; pass the last id as `after` for the next page."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self._one("GET", "/v1/training/jobs", PageOut[TrainingJobOut], params=params)

    def get_training_job(self, job_id: str) -> TrainingJobOut:
        return self._one("GET", _job_path(job_id), TrainingJobOut)

    def cancel_training_job(self, job_id: str) -> TrainingJobOut:
        """Cancel at once when not started; a running job stops within seconds."""
        return self._one("POST", f"{_job_path(job_id)}/cancel", TrainingJobOut)

    def training_job_events(
        self, job_id: str, *, after: int | None = None, limit: int = 100, order: str = "asc"
    ) -> PageOut[TrainingEventOut]:
        params: dict[str, str | int] = {"limit": limit, "order": order}
        if after is not None:
            params["after"] = after
        path = f"{_job_path(job_id)}/events"
        return self._one("GET", path, PageOut[TrainingEventOut], params=params)

    def training_job_checkpoints(
        self, job_id: str, *, after: str | None = None, limit: int = 10
    ) -> PageOut[TrainingCheckpointOut]:
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        path = f"{_job_path(job_id)}/checkpoints"
        return self._one("GET", path, PageOut[TrainingCheckpointOut], params=params)

    def follow_training_job(
        self, job_id: str, *, poll_s: float = 1.0, after: int | None = None
    ) -> Iterator[TrainingJobUpdate]:
        """Yield the job and its new events every `poll_s` until it has finished (the last
        update holds the finished job and its last events)::

            for update in client.follow_training_job(job.id):
                for event in update.events:
                    print(event.message)
        """
        while True:
            events = self.training_job_events(job_id, after=after, limit=1000)
            if events.data:
                after = events.data[-1].id
            job = self.get_training_job(job_id)
            yield TrainingJobUpdate(job=job, events=list(events.data))
            if events.has_more:
                continue
            if job.finished:
                # Events written just before the job finished may follow this page.
                rest = self.training_job_events(job_id, after=after, limit=1000)
                if rest.data:
                    yield TrainingJobUpdate(job=job, events=list(rest.data))
                return
            time.sleep(poll_s)

    def wait_for_training_job(
        self, job_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None
    ) -> TrainingJobOut:
        """Block until the job has finished (succeeded, failed or cancelled)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get_training_job(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout_s} s")
            time.sleep(poll_s)

    # -- usage and audit -----------------------------------------------------------------

    def usage(
        self,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        project: str | None = None,
        key_id: int | None = None,
        key_prefix: str | None = None,
        model: str | None = None,
        group_by: Sequence[str] | None = None,
    ) -> UsageReportOut:
        """Usage totals in [start, end) per group, and overall.

        Defaults: the 30 days before now, grouped by day and model (`group_by` takes any of
        day, project, key, model, route; `[]` gives the totals only). Times without a zone
        are UTC. A key without the `admin` scope sees its own project only.
        """
        params = _metering_params(
            start=start,
            end=end,
            project=project,
            key_id=key_id,
            key_prefix=key_prefix,
            model=model,
            group_by=",".join(group_by) if group_by is not None else None,
        )
        return self._one("GET", "/v1/usage", UsageReportOut, params=params)

    def usage_csv(
        self,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        project: str | None = None,
        key_id: int | None = None,
        key_prefix: str | None = None,
        model: str | None = None,
        group_by: Sequence[str] | None = None,
    ) -> str:
        """The billing CSV: one row per day, project, key and model by default, with the cost
        from the server's price table (OPENMAAS_USAGE_PRICES)."""
        params = _metering_params(
            start=start,
            end=end,
            project=project,
            key_id=key_id,
            key_prefix=key_prefix,
            model=model,
            group_by=",".join(group_by) if group_by is not None else None,
            format="csv",
        )
        return self._request("GET", "/v1/usage", params=params).text

    def audit(
        self,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        actor: str | None = None,
        project: str | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int = 100,
        after_id: int | None = None,
    ) -> AuditListOut:
        """One page of audit events, oldest first (needs an `admin` key). For the next page
        pass the answer's `next_after_id` as `after_id`; it is None on the last page.
        `target="models/bert"` also finds the model's versions and aliases."""
        params = _metering_params(
            start=start,
            end=end,
            actor=actor,
            project=project,
            action=action,
            target=target,
            limit=limit,
            after_id=after_id,
        )
        return self._one("GET", "/v1/audit", AuditListOut, params=params)

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


def _metering_params(**values: datetime | str | int | None) -> dict[str, str | int]:
    """Query parameters without the unset ones; datetimes as ISO 8601."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in values.items()
        if value is not None
    }


def _job_path(job_id: str) -> str:
    return f"/v1/training/jobs/{_segment(job_id)}"


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


@contextlib.contextmanager
def _upload_reader(path: Path, progress: ProgressCallback | None) -> Iterator[ProgressReader]:
    """`path` opened for an upload body, reporting `UploadProgress("upload", ...)` from 0 to
    its size as httpx reads it."""
    total = path.stat().st_size
    sent = 0

    def on_read(size: int) -> None:
        nonlocal sent
        sent += size
        if progress is not None:
            progress(UploadProgress("upload", min(sent, total), total))

    if progress is not None:
        progress(UploadProgress("upload", 0, total))
    with path.open("rb") as handle:
        yield ProgressReader(handle, on_read)
