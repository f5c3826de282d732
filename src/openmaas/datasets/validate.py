"""Reading a dataset file into examples, with a report of every problem by line.

`open_dataset` recognises the format, infers the schema from the first rows and returns a
`DatasetReader`; iterating it yields the valid examples, and `report()` then names each
problem (line, column, what is wrong, how to fix it). A file that cannot be read at all
(empty, binary, no recognisable format or columns) raises `InvalidRequest` instead.

Example::

    with open("train.csv", "rb") as handle:
        reader = open_dataset(handle, filename="train.csv")
        examples = list(reader)
    report = reader.report()  # a ValidationReport (`report.py`)
    for problem in report.problems:
        print(problem.line, problem.column, problem.problem, "-", problem.hint)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from itertools import chain, islice
from typing import Any, BinaryIO

from openmaas.datasets.checks.chat import chat_example, prompt_completion_example
from openmaas.datasets.checks.fields import kind_of, report_missing, text_field
from openmaas.datasets.checks.tags import tokens_tags_example
from openmaas.datasets.formats import (
    SNIFF_BYTES,
    Example,
    Format,
    RawRecord,
    Record,
    Unreadable,
    detect_format,
    read_conll,
    read_jsonl,
    read_table,
    read_text_lines,
    split_lines,
)
from openmaas.datasets.images import (
    ImageChecks,
    ImageDatasetLimits,
    ImageFolderReader,
    image_from_field,
    image_label,
    is_archive,
)
from openmaas.datasets.report import DEFAULT_MAX_PROBLEMS, ReportBuilder, ValidationReport
from openmaas.datasets.schema import (
    CHAT_EXTRA_KEYS,
    SAMPLE_RECORDS,
    DatasetSchema,
    Source,
    infer_conll_schema,
    infer_jsonl_schema,
    infer_table_schema,
    text_lines_schema,
)
from openmaas.errors import InvalidRequest
from openmaas.images import ImageLimits
from openmaas.tasks.names import Task

READ_CHUNK_BYTES = 1024 * 1024


def open_dataset(
    stream: BinaryIO,
    *,
    filename: str = "",
    format: str | None = None,  # the API's field name
    text_column: str | None = None,
    label_column: str | None = None,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
    schema: DatasetSchema | None = None,
    image_limits: ImageDatasetLimits | None = None,
) -> DatasetReader | ImageFolderReader:
    """Recognise the file's format and schema from its start; the reader yields examples.

    With `schema` (as recorded when the file was first read) nothing is inferred again.
    An archive (.zip, .tar.gz) is a dataset of images, one folder per class (`images.py`)."""
    head = stream.read(SNIFF_BYTES)
    limits = image_limits or ImageDatasetLimits()
    archived = schema.format is Format.IMAGE_FOLDERS if schema is not None else is_archive(head)
    if archived:
        return ImageFolderReader(head, stream, limits=limits, max_problems=max_problems)
    fmt = schema.format if schema is not None else detect_format(filename, head, format)
    chunks = chain([head], iter(partial(stream.read, READ_CHUNK_BYTES), b""))
    lines = split_lines(chunks, keep_ends=fmt in (Format.CSV, Format.TSV))
    if fmt is Format.JSONL:
        records = read_jsonl(lines)
    elif fmt is Format.CONLL:
        records = read_conll(lines)
    elif fmt is Format.TEXT:
        records = read_text_lines(lines)
    else:
        records = read_table(lines, fmt)
    sample = list(islice(records, SAMPLE_RECORDS))
    readable = [record for record in sample if isinstance(record, RawRecord)]
    if not readable:
        first = next((r for r in sample if isinstance(r, Unreadable)), None)
        detail = f": line {first.line}: {first.detail}" if first is not None else ""
        raise InvalidRequest(
            f"no line of the file could be read as {fmt.value.upper()}{detail}",
            param="file",
            code="invalid_file",
        )
    if schema is None:
        if fmt is Format.JSONL:
            schema = infer_jsonl_schema([r.values for r in readable], text_column, label_column)
        elif fmt is Format.CONLL:
            schema = infer_conll_schema(r.values["tags"] for r in readable)
        elif fmt is Format.TEXT:
            schema = text_lines_schema(text_column, label_column)
        else:
            rows = [r.cells for r in readable]
            schema = infer_table_schema(fmt, rows, text_column, label_column)
    header = readable[0] if schema.has_header else None
    return DatasetReader(schema, chain(sample, records), header, max_problems, limits.image)


class DatasetReader:
    """The examples of one file under its schema; `report()` once they have all been read."""

    def __init__(
        self,
        schema: DatasetSchema,
        records: Iterator[Record],
        header: RawRecord | None,
        max_problems: int,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.schema = schema
        self._records = records
        self._header = header
        self._problems = ReportBuilder(max_problems)
        self._images = ImageChecks(self._problems, image_limits or ImageLimits())
        self._rows_read = 0
        self._rows_valid = 0
        self._labels: set[str] = set()  # up to two: enough to tell a usable classifier set
        self._warned_keys: set[str] = set()
        self._report: ValidationReport | None = None

    def __iter__(self) -> Iterator[Example]:
        if self._report is not None:
            raise RuntimeError("a DatasetReader reads its file once")
        for record in self._records:
            if record is self._header:
                continue
            self._rows_read += 1
            if isinstance(record, Unreadable):
                self._add_unreadable(record)
                continue
            errors_before = self._problems.errors
            example = self._example(record)
            if example is not None and self._problems.errors == errors_before:
                self._rows_valid += 1
                yield example
        self._finish()

    def report(self) -> ValidationReport:
        if self._report is None:
            raise RuntimeError("read every example before asking for the report")
        return self._report

    # -- per record ---------------------------------------------------------------------------

    def _add_unreadable(self, record: Unreadable) -> None:
        hint = None
        if record.code == "invalid_row":
            hint = (
                "quote fields that contain commas, quotes or line breaks, and double the "
                'quotes inside them ("")'
                if self.schema.format is Format.CSV
                else "TSV has no quoting: remove tabs and line breaks inside fields"
            )
        self._problems.add(record.line, record.code, record.detail, column=record.column, hint=hint)

    def _example(self, record: RawRecord) -> Example | None:
        source = self.schema.source
        values = self._fields(record)
        if values is None:
            return None
        if self.schema.format is Format.JSONL:
            self._warn_unknown_keys(record)
        if source is Source.TOKENS_TAGS:
            return tokens_tags_example(self._problems, self.schema, record, values)
        if source is Source.CHAT:
            return chat_example(self._problems, record.line, values)
        if source is Source.PROMPT_COMPLETION:
            return prompt_completion_example(self._problems, record.line, values)
        if source is Source.IMAGE_LABEL:
            return self._image_label(record.line, values)
        return self._text_label(record.line, values)

    def _fields(self, record: RawRecord) -> Mapping[str, Any] | None:
        """The record's fields by column name; None (with a problem) for a CSV/TSV row whose
        field count does not fit the header."""
        if self.schema.format not in (Format.CSV, Format.TSV):
            return record.values
        columns = self.schema.columns
        cells = record.cells
        span = ""
        if record.last_line > record.line:
            span = (
                f" (the row runs from line {record.line} to {record.last_line}: "
                "is a quote left open?)"
            )
        if len(cells) > len(columns):
            self._problems.add(
                record.line,
                "unknown_column",
                f"the row has {len(cells)} fields; the header names {len(columns)}{span}",
                column=f"field {len(columns) + 1}",
            )
            return None
        needed = [c for c in (self.schema.text_column, self.schema.label_column) if c]
        missing = [c for c in columns[len(cells) :] if c in needed]
        if missing:
            self._problems.add(
                record.line,
                "missing_column",
                f"the row has {len(cells)} field{'s' if len(cells) != 1 else ''}; "
                f"{', '.join(repr(c) for c in missing)} is missing{span}",
                column=missing[0],
            )
            return None
        return dict(zip(columns, cells, strict=False))

    def _warn_unknown_keys(self, record: RawRecord) -> None:
        schema = self.schema
        by_source: dict[Source, set[str | None]] = {
            Source.TEXT_LABEL: {schema.text_column, schema.label_column},
            Source.TEXT: {schema.text_column},
            Source.TOKENS_TAGS: {schema.tokens_column, schema.tags_column},
            Source.CHAT: {"messages", *CHAT_EXTRA_KEYS},
            Source.PROMPT_COMPLETION: {"prompt", "completion"},
            Source.IMAGE_LABEL: {schema.text_column, schema.label_column},
        }
        known = by_source[schema.source]
        for key in record.values:
            if key not in known and key not in self._warned_keys:
                self._warned_keys.add(key)
                self._problems.add(
                    record.line,
                    "unknown_column",
                    f"field {key!r} is not used (first seen on this line; ignored)",
                    column=key,
                    hint="remove it, or name it with text_column / label_column",
                    severity="warning",
                )

    def _text_label(self, line: int, values: Mapping[str, Any]) -> Example | None:
        assert self.schema.text_column is not None  # every text schema names one
        text = text_field(self._problems, line, values, self.schema.text_column)
        column = self.schema.label_column
        if column is None:
            return None if text is None else {"text": text}
        raw = values.get(column)
        label: str | None = None
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            report_missing(self._problems, line, values, column, "missing_label")
        elif isinstance(raw, bool) or not isinstance(raw, str | int):
            self._problems.add(
                line,
                "invalid_value",
                f"the label is {kind_of(raw)}; it must be a string or an integer",
                column=column,
                hint="write one label per row, as a string (or an integer class id)",
            )
        else:
            label = str(raw).strip()
        if text is None or label is None:
            return None
        if len(self._labels) < 2:
            self._labels.add(label)
        return {"text": text, "label": label}

    def _image_label(self, line: int, values: Mapping[str, Any]) -> Example | None:
        column = self.schema.label_column or "label"
        label = image_label(values, column)
        if label is None:
            report_missing(self._problems, line, values, column, "missing_label")
        data = image_from_field(values.get("image"), self._images, line)
        if data is None or label is None:
            return None
        return self._images.example(data, label, line=line, where=f"line {line}", column="image")

    # -- the whole file -----------------------------------------------------------------------

    def _finish(self) -> None:
        if self.schema.source is Source.IMAGE_LABEL:
            self._images.finish()
        if self._rows_valid == 0:
            self._problems.add(None, "no_examples", "the file holds no valid example")
        elif self.schema.task is Task.TEXT_CLASSIFICATION and len(self._labels) < 2:
            only = next(iter(self._labels))
            self._problems.add(
                None,
                "too_few_labels",
                f"every example has the label {only!r}",
                column=self.schema.label_column,
            )
        self._report = self._problems.build(self._rows_read, self._rows_valid)
