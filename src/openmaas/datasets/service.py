"""DatasetService: dataset files owned by projects, stored as uploaded, described once.

An upload is written to the artifact store (encrypted at rest when the store has a key) and
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
"""

from __future__ import annotations

import builtins
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from openmaas.auth.access import is_admin, require_caller
from openmaas.auth.entities import Principal
from openmaas.datasets.formats import ContentHasher, Example, Format, parse_format
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
PURPOSES = ("fine-tune",)
MAX_FILENAME = 255


class DatasetStatus(StrEnum):
    PROCESSED = "processed"
    ERROR = "error"  # failed validation: kept with its report, refused for training


@dataclass(frozen=True, slots=True)
class DatasetLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_problems: int = DEFAULT_MAX_PROBLEMS  # problems kept in a report (all are counted)


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
        if purpose not in PURPOSES:
            raise InvalidRequest(
                f"purpose {purpose!r} is not supported: this server keeps files for "
                f"fine-tuning ({', '.join(repr(p) for p in PURPOSES)})",
                param="purpose",
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
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return _entity(row)

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
            return _entity(self._row(session, dataset_id, project))

    def list(
        self,
        *,
        caller: Principal,
        purpose: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> builtins.list[Dataset]:
        """The files the caller sees, newest first by default; `after` (an id from the
        previous page) continues."""
        project = _visible_project(caller)
        query = select(DatasetRow)
        if project is not None:
            query = query.where(DatasetRow.project == project)
        if purpose is not None:
            query = query.where(DatasetRow.purpose == purpose)
        with self.db.transaction() as session:
            if after is not None:
                cursor = self._row(session, after, project, param="after")
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
            return [_entity(row) for row in session.scalars(query)]

    def content(self, dataset_id: str, *, caller: Principal) -> Iterator[bytes]:
        """The file's bytes as uploaded, in chunks (decrypted when stored encrypted). The
        lookup happens now, so a missing file raises before anything is streamed."""
        dataset = self.get(dataset_id, caller=caller)
        return self._chunks(self.root / dataset.id / CONTENT_FILE, dataset.filename)

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
            for example in open_dataset(handle, schema=dataset.schema):
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
        """Remove the file and its record; returns what was removed."""
        project = _visible_project(caller)
        with self.db.transaction() as session:
            row = self._row(session, dataset_id, project)
            removed = _entity(row)
            session.delete(row)
        shutil.rmtree(self.root / removed.id, ignore_errors=True)
        return removed

    # -- plumbing -------------------------------------------------------------------------

    def _row(
        self, session: Session, dataset_id: str, project: str | None, param: str = "file_id"
    ) -> DatasetRow:
        row = session.get(DatasetRow, dataset_id)
        if row is None or (project is not None and row.project != project):
            # Another project's file answers exactly like a file that does not exist.
            raise NotFound(f"no such file: {dataset_id!r}", param=param, code="file_not_found")
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
