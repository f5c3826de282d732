"""DatasetService: the files of projects (OpenAI's `/v1/files`): datasets for fine-tuning,
described once, and the request and result files of batches, stored as they are.

A file's purpose says what it holds and which scope reads it: `fine-tune` files are
datasets (the `training` scope); `batch` files (a batch's requests, uploaded) and
`batch_output` files (its results, written by the server) are the `inference` scope's. A key
sees the files of the purposes its scopes cover (an admin every file); the others answer like
files that do not exist. The dataset methods (`get`, `list`, `load`, `splits`, `delete`) see
datasets only; the file methods (`create_file`, `file`, `list_files`, `content`,
`delete_file`) every purpose.

A dataset upload is written to the artifact store (encrypted at rest when the store has a key) and
hashed in the same pass, refused past `DatasetLimits.max_bytes`, then read once: schema,
statistics, the validation report and the content hash are recorded with it. A file that
fails validation is kept with status `error` and its report; one that cannot be read at
all is refused (`InvalidRequest`, code `invalid_file`) and nothing is kept.

Every entry point takes the caller explicitly and refuses a missing one (`MissingCaller`).
A caller sees its own project's files, an admin (or the server's own `SYSTEM`) every
project's; another project's file is reported exactly like one that does not exist.

Example::

    datasets = DatasetService(db, artifacts, DatasetLimits(max_bytes=64 * MiB))
    with open("train.csv", "rb") as upload:
        dataset = datasets.create(upload, filename="train.csv", project="acme", caller=who)
    dataset.status, dataset.report.errors, dataset.content_sha256
    train, validation, test = datasets.splits(dataset.id, caller=who, seed=7)
    with open("requests.jsonl", "rb") as upload:
        stored = datasets.create_file(upload, filename="requests.jsonl", purpose="batch",
                                      project="acme", caller=who)
"""

from __future__ import annotations

import builtins
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Literal

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from openmaas.auth.access import is_admin, require_caller
from openmaas.auth.entities import Principal
from openmaas.datasets.files import (
    BATCH_OUTPUT,
    FINE_TUNE,
    PLAIN_FORMAT,
    StoredFile,
    check_purpose,
    file_entity,
    readable_purposes,
)
from openmaas.datasets.formats import ContentHasher, Example, Format, parse_format
from openmaas.datasets.images import ImageDatasetLimits
from openmaas.datasets.report import DEFAULT_MAX_PROBLEMS, ValidationReport
from openmaas.datasets.schema import DatasetSchema
from openmaas.datasets.split import DEFAULT_RATIOS, DatasetSplits, check_ratios, split_examples
from openmaas.datasets.stats import DatasetStats, StatsBuilder
from openmaas.datasets.validate import open_dataset
from openmaas.errors import (
    ArtifactCorrupted,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from openmaas.registry.artifacts import ArtifactStore
from openmaas.store.database import Database
from openmaas.store.tables import DatasetRow
from openmaas.tasks.names import Task

MiB = 1024 * 1024
# OpenAI's own limit for one file.
DEFAULT_MAX_BYTES = 512 * MiB
DATASETS_DIR = "datasets"
CONTENT_FILE = "content"
CHUNK_BYTES = 1024 * 1024
# Uploads write their directory before their row; a younger directory without a row may
# be an upload in progress, so the sweep leaves it alone.
ORPHAN_GRACE_S = 3600.0
MAX_FILENAME = 255


class DatasetStatus(StrEnum):
    PROCESSED = "processed"
    ERROR = "error"  # failed validation: kept with its report, refused for training


@dataclass(frozen=True, slots=True)
class DatasetLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_problems: int = DEFAULT_MAX_PROBLEMS  # problems kept in a report (all are counted)
    images: ImageDatasetLimits = field(default_factory=ImageDatasetLimits)  # datasets of images


@dataclass(frozen=True, slots=True)
class Dataset:
    id: str  # file-<24 hex>
    project: str
    purpose: str
    filename: str
    format: Format
    size_bytes: int
    sha256: str  # of the bytes as uploaded
    content_sha256: str  # of the valid examples, canonical JSON Lines: the lineage hash
    status: DatasetStatus
    task: Task
    schema: DatasetSchema
    stats: DatasetStats
    report: ValidationReport
    created_at: datetime
    created_by: str

    @property
    def status_details(self) -> str | None:
        return self.report.summary()


@dataclass(frozen=True, slots=True)
class _Analysis:
    schema: DatasetSchema
    stats: DatasetStats
    report: ValidationReport
    content_sha256: str


class DatasetService:
    """Create, list, read, split and delete the dataset files of projects."""

    def __init__(
        self, db: Database, artifacts: ArtifactStore, limits: DatasetLimits | None = None
    ) -> None:
        self.db = db
        self.artifacts = artifacts
        self.limits = limits or DatasetLimits()
        self.root = artifacts.root / DATASETS_DIR

    def start(self) -> list[str]:
        """Remove what interrupted uploads left behind; returns the directories removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.db.transaction() as session:
            known = set(session.scalars(select(DatasetRow.id)))
        removed = []
        now = time.time()
        for entry in self.root.iterdir():
            if entry.name in known or now - entry.stat().st_mtime < ORPHAN_GRACE_S:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        return removed

    # -- create ---------------------------------------------------------------------------

    def create(
        self,
        stream: IO[bytes],
        *,
        filename: str,
        project: str,
        caller: Principal,
        created_by: str = "",
        purpose: str = "fine-tune",
        format: str | None = None,  # the API's field name
        text_column: str | None = None,
        label_column: str | None = None,
    ) -> Dataset:
        """Store `stream` as a file of `project`, read it and record the result (blocks:
        call from a thread). Only admins add files to a project other than their own."""
        who = require_caller(caller)
        if not is_admin(who) and who.project != project:
            raise PermissionDenied(
                f"this API key adds files to project {who.project!r} only, not {project!r}",
                param="project",
            )
        check_purpose(who, purpose)
        if purpose != FINE_TUNE:
            raise InvalidRequest(
                f"a dataset's purpose is {FINE_TUNE!r}, not {purpose!r}", param="purpose"
            )
        if format:
            parse_format(format)  # a wrong name fails before anything is written
        name = _clean_filename(filename)
        dataset_id = f"file-{uuid.uuid4().hex[:24]}"
        directory = self.root / dataset_id
        path = directory / CONTENT_FILE
        try:
            entry = self.artifacts.write_stream(stream, path, self._size_guard())
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            analysis = self._analyze(path, name, format, text_column, label_column)
            row = DatasetRow(
                id=dataset_id,
                project=project,
                purpose=purpose,
                filename=name,
                format=analysis.schema.format.value,
                size_bytes=entry.size,
                sha256=entry.sha256,
                content_sha256=analysis.content_sha256,
                location=f"{DATASETS_DIR}/{dataset_id}/{CONTENT_FILE}",
                status=(
                    DatasetStatus.PROCESSED if analysis.report.ok else DatasetStatus.ERROR
                ).value,
                task=analysis.schema.task.value,
                schema=analysis.schema.to_dict(),
                stats=analysis.stats.to_dict(),
                report=analysis.report.to_dict(),
                created_at=datetime.now(UTC),
                created_by=created_by,
            )
            with self.db.transaction() as session:
                session.add(row)
        except BaseException:
            self.artifacts.remove_tree(directory)
            raise
        return _entity(row)

    def create_file(
        self,
        stream: IO[bytes],
        *,
        filename: str,
        project: str,
        caller: Principal,
        created_by: str = "",
        purpose: str,
    ) -> StoredFile:
        """Store an upload of any purpose (blocks: call from a thread): a `fine-tune` file
        is read as a dataset (`create`), a `batch` file kept as it is (the batch reads it)."""
        who = require_caller(caller)
        check_purpose(who, purpose)
        if purpose == FINE_TUNE:
            dataset = self.create(
                stream,
                filename=filename,
                project=project,
                caller=caller,
                created_by=created_by,
                purpose=purpose,
            )
            return self.file(dataset.id, caller=caller)
        if not is_admin(who) and who.project != project:
            raise PermissionDenied(
                f"this API key adds files to project {who.project!r} only, not {project!r}",
                param="project",
            )
        return self._store_plain(
            stream, filename=filename, project=project, purpose=purpose, created_by=created_by
        )

    def store_output(
        self, stream: IO[bytes], *, filename: str, project: str, created_by: str, caller: Principal
    ) -> StoredFile:
        """Keep a file the server wrote for `project` (a batch's results: `batch_output`).
        Only the server's own work (an admin principal) writes one."""
        who = require_caller(caller)
        if not is_admin(who):
            raise PermissionDenied("only the server writes batch output files", param="purpose")
        return self._store_plain(
            stream,
            filename=filename,
            project=project,
            purpose=BATCH_OUTPUT,
            created_by=created_by,
            limit=False,
        )

    def _store_plain(
        self,
        stream: IO[bytes],
        *,
        filename: str,
        project: str,
        purpose: str,
        created_by: str,
        limit: bool = True,
    ) -> StoredFile:
        name = _clean_filename(filename)
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        directory = self.root / file_id
        path = directory / CONTENT_FILE
        try:
            entry = self.artifacts.write_stream(stream, path, self._size_guard() if limit else None)
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            row = DatasetRow(
                id=file_id,
                project=project,
                purpose=purpose,
                filename=name,
                format=PLAIN_FORMAT,
                size_bytes=entry.size,
                sha256=entry.sha256,
                content_sha256="",
                location=f"{DATASETS_DIR}/{file_id}/{CONTENT_FILE}",
                status=DatasetStatus.PROCESSED.value,
                task=None,
                schema={},
                stats={},
                report={},
                created_at=datetime.now(UTC),
                created_by=created_by,
            )
            with self.db.transaction() as session:
                session.add(row)
        except BaseException:
            self.artifacts.remove_tree(directory)
            raise
        return file_entity(row)

    def _size_guard(self) -> Callable[[int], None]:
        limit = self.limits.max_bytes
        received = 0

        def count(size: int) -> None:
            nonlocal received
            received += size
            if received > limit:
                raise PayloadTooLarge(
                    f"the file is larger than the {_size_text(limit)} this server accepts "
                    "for a dataset (OPENMAAS_MAX_DATASET_MB)",
                    param="file",
                    code="file_too_large",
                )

        return count

    def _analyze(
        self,
        path: Path,
        filename: str,
        fmt: str | None,
        text_column: str | None,
        label_column: str | None,
    ) -> _Analysis:
        with self.artifacts.open_plaintext(path, name=filename) as handle:
            reader = open_dataset(
                handle,
                filename=filename,
                format=fmt,
                text_column=text_column,
                label_column=label_column,
                max_problems=self.limits.max_problems,
                image_limits=self.limits.images,
            )
            stats = StatsBuilder(reader.schema.task)
            hasher = ContentHasher()
            for example in reader:
                stats.add(example)
                hasher.add(example)
        return _Analysis(reader.schema, stats.build(), reader.report(), hasher.hexdigest())

    # -- read -----------------------------------------------------------------------------

    def get(self, dataset_id: str, *, caller: Principal) -> Dataset:
        project = _visible_project(caller)
        with self.db.transaction() as session:
            return _entity(self._dataset_row(session, dataset_id, project, caller))

    def list(
        self,
        *,
        caller: Principal,
        purpose: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> builtins.list[Dataset]:
        """The datasets the caller sees, newest first by default; `after` (an id from the
        previous page) continues."""
        if purpose not in (None, FINE_TUNE):
            return []
        return [
            _entity(row)
            for row in self._rows(caller, (FINE_TUNE,), limit=limit, after=after, order=order)
        ]

    def list_files(
        self,
        *,
        caller: Principal,
        purpose: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> builtins.list[StoredFile]:
        """The files of every purpose the caller sees (or of `purpose`), newest first by
        default; `after` (an id from the previous page) continues."""
        purposes = readable_purposes(require_caller(caller))
        if purpose is not None:
            purposes = tuple(p for p in purposes if p == purpose)
        return [
            file_entity(row)
            for row in self._rows(caller, purposes, limit=limit, after=after, order=order)
        ]

    def _rows(
        self,
        caller: Principal,
        purposes: Sequence[str],
        *,
        limit: int | None,
        after: str | None,
        order: Literal["asc", "desc"],
    ) -> builtins.list[DatasetRow]:
        project = _visible_project(caller)
        query = select(DatasetRow).where(DatasetRow.purpose.in_(list(purposes)))
        if project is not None:
            query = query.where(DatasetRow.project == project)
        with self.db.transaction() as session:
            if after is not None:
                cursor = self._file_row(session, after, project, caller, param="after")
                at, key = cursor.created_at, cursor.id
                if order == "desc":
                    beyond = or_(
                        DatasetRow.created_at < at,
                        and_(DatasetRow.created_at == at, DatasetRow.id < key),
                    )
                else:
                    beyond = or_(
                        DatasetRow.created_at > at,
                        and_(DatasetRow.created_at == at, DatasetRow.id > key),
                    )
                query = query.where(beyond)
            if order == "desc":
                query = query.order_by(DatasetRow.created_at.desc(), DatasetRow.id.desc())
            else:
                query = query.order_by(DatasetRow.created_at, DatasetRow.id)
            if limit is not None:
                query = query.limit(limit)
            return builtins.list(session.scalars(query))

    def file(self, file_id: str, *, caller: Principal) -> StoredFile:
        """A file of any purpose the caller's scopes cover."""
        project = _visible_project(caller)
        with self.db.transaction() as session:
            return file_entity(self._file_row(session, file_id, project, caller))

    def content(self, dataset_id: str, *, caller: Principal) -> Iterator[bytes]:
        """The file's bytes as uploaded, in chunks (decrypted when stored encrypted). The
        lookup happens now, so a missing file raises before anything is streamed."""
        found = self.file(dataset_id, caller=caller)
        return self._chunks(self.root / found.id / CONTENT_FILE, found.filename)

    def open_file(self, file_id: str, *, caller: Principal) -> BinaryIO:
        """The file's plaintext, opened to read (close it; a batch reads its requests so).
        The lookup happens now: a missing file raises here."""
        found = self.file(file_id, caller=caller)
        return self.artifacts.open_plaintext(
            self.root / found.id / CONTENT_FILE, name=found.filename
        )

    def _chunks(self, path: Path, name: str) -> Iterator[bytes]:
        with self.artifacts.open_plaintext(path, name=name) as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def load(self, dataset_id: str, *, caller: Principal) -> tuple[Task, builtins.list[Example]]:
        """The task and the valid examples, in file order. Refuses a file that failed
        validation, and one whose examples no longer match the recorded content hash."""
        dataset = self.get(dataset_id, caller=caller)
        if dataset.status is DatasetStatus.ERROR:
            raise InvalidRequest(
                f"file {dataset.id!r} did not pass validation ({dataset.report.errors} "
                f"errors); see GET /v1/datasets/{dataset.id} for the report",
                param="file_id",
                code="invalid_dataset",
            )
        path = self.root / dataset.id / CONTENT_FILE
        hasher = ContentHasher()
        examples = []
        with self.artifacts.open_plaintext(path, name=dataset.filename) as handle:
            reader = open_dataset(handle, schema=dataset.schema, image_limits=self.limits.images)
            for example in reader:
                hasher.add(example)
                examples.append(example)
        if hasher.hexdigest() != dataset.content_sha256:
            raise ArtifactCorrupted(
                f"file {dataset.id!r}: its stored content no longer matches its content hash"
            )
        return dataset.task, examples

    def splits(
        self,
        dataset_id: str,
        *,
        caller: Principal,
        seed: int = 0,
        ratios: Sequence[float] = DEFAULT_RATIOS,
    ) -> DatasetSplits:
        """(train, validation, test): deterministic for a seed, stratified by label for text
        classification (see `datasets.split`)."""
        require_caller(caller)
        shares = check_ratios(ratios)
        task, examples = self.load(dataset_id, caller=caller)
        return split_examples(examples, task, seed=seed, ratios=shares)

    # -- delete ---------------------------------------------------------------------------

    def delete(self, dataset_id: str, *, caller: Principal) -> Dataset:
        """Remove the dataset and its record; returns what was removed."""
        project = _visible_project(caller)
        with self.db.transaction() as session:
            row = self._dataset_row(session, dataset_id, project, caller)
            removed = _entity(row)
            session.delete(row)
        self.artifacts.remove_tree(self.root / removed.id)
        return removed

    def delete_file(self, file_id: str, *, caller: Principal) -> StoredFile:
        """Remove a file of any purpose the caller sees; returns what was removed."""
        project = _visible_project(caller)
        with self.db.transaction() as session:
            row = self._file_row(session, file_id, project, caller)
            removed = file_entity(row)
            session.delete(row)
        self.artifacts.remove_tree(self.root / removed.id)
        return removed

    # -- plumbing -------------------------------------------------------------------------

    def _file_row(
        self,
        session: Session,
        file_id: str,
        project: str | None,
        caller: Principal,
        param: str = "file_id",
    ) -> DatasetRow:
        row = session.get(DatasetRow, file_id)
        if (
            row is None
            or (project is not None and row.project != project)
            or row.purpose not in readable_purposes(caller)
        ):
            # Another project's file, or one of a purpose the key may not read, answers
            # exactly like a file that does not exist.
            raise NotFound(f"no such file: {file_id!r}", param=param, code="file_not_found")
        return row

    def _dataset_row(
        self, session: Session, dataset_id: str, project: str | None, caller: Principal
    ) -> DatasetRow:
        row = self._file_row(session, dataset_id, project, caller)
        if row.purpose != FINE_TUNE:
            raise InvalidRequest(
                f"file {dataset_id!r} is a {row.purpose!r} file, not a dataset",
                param="file_id",
                code="not_a_dataset",
            )
        return row


def _visible_project(caller: Principal) -> str | None:
    """The project whose files `caller` sees; None (every project) for admins."""
    who = require_caller(caller)
    return None if is_admin(who) else who.project


def _entity(row: DatasetRow) -> Dataset:
    schema = DatasetSchema.from_dict(row.schema)
    return Dataset(
        id=row.id,
        project=row.project,
        purpose=row.purpose,
        filename=row.filename,
        format=Format(row.format),
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        content_sha256=row.content_sha256,
        status=DatasetStatus(row.status),
        task=schema.task,
        schema=schema,
        stats=DatasetStats.from_dict(row.stats),
        report=ValidationReport.from_dict(row.report),
        # SQLite hands timestamps back without a zone; they were written in UTC.
        created_at=row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC),
        created_by=row.created_by,
    )


def _clean_filename(filename: str) -> str:
    """The name only (a client may send a path), without control characters."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:MAX_FILENAME] or "upload"


def _size_text(size: int) -> str:
    return f"{size / MiB:g} MiB" if size >= MiB else f"{size} bytes"
