"""Response bodies of `/v1/files` (OpenAI's Files API, exactly) and `/v1/datasets`.

Shared by the server and the Python SDK, so nothing here imports FastAPI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from openmaas.protocol.common import OmitsNone, Response

# -- OpenAI Files API -----------------------------------------------------------------------


class FileOut(OmitsNone):
    """OpenAI's File object; `status_details` is absent unless the file has problems."""

    omitted_when_none = frozenset({"status_details"})

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int  # Unix seconds
    filename: str
    purpose: str
    status: str  # processed | error
    status_details: str | None = None


class FileListOut(Response):
    """A page of files. OpenAI's schema requires `first_id` and `last_id` as strings, so an
    empty page has them empty (`""`): no file has that id, and a client pages on `has_more`
    and the last file's id, as the `openai` client does."""

    object: Literal["list"] = "list"
    data: list[FileOut]
    first_id: str = ""
    last_id: str = ""
    has_more: bool = False


class FileDeletedOut(Response):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


# -- datasets -------------------------------------------------------------------------------


class ProblemOut(Response):
    line: int | None  # 1-based; null for a problem of the whole file
    column: str | None
    code: str
    severity: Literal["error", "warning"]
    problem: str
    hint: str


class ReportOut(Response):
    ok: bool
    errors: int
    warnings: int
    counts: dict[str, int]  # by problem code, every problem counted
    rows_read: int
    rows_valid: int
    max_problems: int
    truncated: bool  # more problems than `problems` lists
    problems: list[ProblemOut]


class LengthOut(Response):
    min: int
    p50: int
    p90: int
    p95: int
    p99: int
    max: int
    mean: float


class ImageStatsOut(Response):
    widths: LengthOut | None
    heights: LengthOut | None
    channels: dict[str, int]  # "1" (grey), "3" (colour) -> images
    formats: dict[str, int]


class StatsOut(Response):
    rows: int
    labels: dict[str, int]  # per label; per entity type for token classification
    chars: LengthOut | None
    words: LengthOut | None  # tokens per sentence for token classification
    duplicates: int
    duplicate_texts: int
    conflicting_labels: int
    images: ImageStatsOut | None = None  # datasets of images


class SchemaOut(Response):
    format: str
    task: str
    source: str  # text-label | text | tokens-tags | chat | prompt-completion
    columns: list[str]
    has_header: bool
    text_column: str | None
    label_column: str | None
    tokens_column: str | None
    tags_column: str | None
    tag_scheme: str | None  # bio | iob1 (converted to BIO)
    notes: list[str]


class DatasetSummaryOut(Response):
    """A dataset in a list: enough to choose one; `GET /v1/datasets/{id}` has the rest."""

    id: str
    object: Literal["dataset"] = "dataset"
    project: str
    filename: str
    format: str
    bytes: int
    status: str
    task: str
    rows: int
    errors: int
    content_sha256: str
    created_at: datetime
    created_by: str


class DatasetOut(Response):
    # `schema` is a field name here; pydantic's BaseModel has a (deprecated) method of that
    # name, so the attribute is `schema_` and the JSON key `schema`.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    object: Literal["dataset"] = "dataset"
    project: str
    purpose: str
    filename: str
    format: str
    bytes: int
    sha256: str  # of the bytes as uploaded
    content_sha256: str  # of the examples (canonical JSON Lines): what lineage records
    status: str  # processed | error
    status_details: str | None
    task: str
    created_at: datetime
    created_by: str
    schema_: SchemaOut = Field(alias="schema")
    stats: StatsOut
    report: ReportOut


class DatasetDeletedOut(Response):
    id: str
    object: Literal["dataset"] = "dataset"
    deleted: bool = True


class SplitPartOut(Response):
    """One split: its size, label distribution and content hash (for lineage)."""

    rows: int
    labels: dict[str, int]
    content_sha256: str


class DatasetSplitOut(Response):
    id: str
    object: Literal["dataset.split"] = "dataset.split"
    task: str
    seed: int
    ratios: list[float]
    train: SplitPartOut
    validation: SplitPartOut
    test: SplitPartOut
