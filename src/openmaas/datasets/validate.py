"""Reading a dataset file into examples, with a report of every problem by line.

`open_dataset` recognises the format, infers the schema from the first rows and returns a
`DatasetReader`; iterating it yields the valid examples, and `report()` then names each
problem (line, column, what is wrong, how to fix it). A file that cannot be read at all
(empty, binary, no recognisable format or columns) raises `InvalidRequest` instead.

Example::

    with open("train.csv", "rb") as handle:
        reader = open_dataset(handle, filename="train.csv")
        examples = list(reader)
    report = reader.report()
    for problem in report.problems:
        print(problem.line, problem.column, problem.problem, "-", problem.hint)
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, islice
from typing import Any, BinaryIO, Literal

from openmaas.datasets.formats import (
    BIO_TAG,
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
    render_chat,
    split_lines,
)
from openmaas.datasets.schema import (
    CHAT_EXTRA_KEYS,
    SAMPLE_RECORDS,
    DatasetSchema,
    Source,
    TagScheme,
    infer_conll_schema,
    infer_jsonl_schema,
    infer_table_schema,
    text_lines_schema,
)
from openmaas.errors import InvalidRequest
from openmaas.tasks.names import Task

DEFAULT_MAX_PROBLEMS = 100
READ_CHUNK_BYTES = 1024 * 1024
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")

Severity = Literal["error", "warning"]

HINTS = {
    "bad_encoding": "save the file as UTF-8",
    "invalid_json": "write exactly one JSON object per line",
    "invalid_row": "quote fields that contain the delimiter, a quote or a line break (CSV), "
    "or remove tabs and line breaks inside fields (TSV)",
    "missing_column": "add the missing field to this row, or remove the row",
    "unknown_column": "remove the extra field, or quote a field that contains the delimiter",
    "empty_text": "fill in the text, or remove the row",
    "missing_label": "give the row a label, or remove it",
    "invalid_value": "see the expected shape in docs/datasets.md",
    "length_mismatch": "give every token exactly one tag",
    "invalid_tag": "write tags as O, B-TYPE or I-TYPE (for example B-PER)",
    "inconsistent_bio": "open every entity with B-TYPE; I-TYPE only continues an entity of "
    "the same type",
    "no_examples": "fix the problems reported and upload the file again",
    "too_few_labels": "a classifier needs examples of at least two labels",
}


@dataclass(frozen=True, slots=True)
class Problem:
    line: int | None  # 1-based; None for a problem of the whole file
    column: str | None
    code: str
    problem: str
    hint: str
    severity: Severity = "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "severity": self.severity,
            "problem": self.problem,
            "hint": self.hint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        return cls(
            line=data.get("line"),
            column=data.get("column"),
            code=data["code"],
            problem=data["problem"],
            hint=data.get("hint", ""),
            severity="warning" if data.get("severity") == "warning" else "error",
        )


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Every problem counted; the first `max_problems` kept in full."""

    problems: tuple[Problem, ...] = ()
    errors: int = 0
    warnings: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)  # by code, all of them
    rows_read: int = 0
    rows_valid: int = 0
    max_problems: int = DEFAULT_MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return self.errors == 0

    @property
    def truncated(self) -> bool:
        return len(self.problems) < self.errors + self.warnings

    def summary(self) -> str | None:
        """One line for an error status (OpenAI's `status_details`); None when ok."""
        if self.ok:
            return None
        kinds = ", ".join(f"{code} x{n}" for code, n in sorted(self.counts.items()))
        text = f"validation failed: {self.errors} error{'s' if self.errors != 1 else ''} ({kinds})"
        first = next((p for p in self.problems if p.severity == "error"), None)
        if first is not None:
            where = f"line {first.line}: " if first.line is not None else ""
            text += f"; first: {where}{first.problem}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "counts": dict(self.counts),
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "max_problems": self.max_problems,
            "truncated": self.truncated,
            "problems": [problem.to_dict() for problem in self.problems],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationReport:
        return cls(
            problems=tuple(Problem.from_dict(p) for p in data.get("problems", ())),
            errors=int(data.get("errors", 0)),
            warnings=int(data.get("warnings", 0)),
            counts=dict(data.get("counts", {})),
            rows_read=int(data.get("rows_read", 0)),
            rows_valid=int(data.get("rows_valid", 0)),
            max_problems=int(data.get("max_problems", DEFAULT_MAX_PROBLEMS)),
        )


class ReportBuilder:
    def __init__(self, max_problems: int = DEFAULT_MAX_PROBLEMS) -> None:
        self.max_problems = max_problems
        self._problems: list[Problem] = []
        self._counts: Counter[str] = Counter()
        self._severities: Counter[str] = Counter()

    def add(
        self,
        line: int | None,
        code: str,
        problem: str,
        *,
        column: str | None = None,
        hint: str | None = None,
        severity: Severity = "error",
    ) -> None:
        self._counts[code] += 1
        self._severities[severity] += 1
        if len(self._problems) < self.max_problems:
            found = Problem(line, column, code, problem, hint or HINTS.get(code, ""), severity)
            self._problems.append(found)

    @property
    def errors(self) -> int:
        return self._severities["error"]

    def build(self, rows_read: int, rows_valid: int) -> ValidationReport:
        return ValidationReport(
            problems=tuple(self._problems),
            errors=self._severities["error"],
            warnings=self._severities["warning"],
            counts=dict(sorted(self._counts.items())),
            rows_read=rows_read,
            rows_valid=rows_valid,
            max_problems=self.max_problems,
        )


def open_dataset(
    stream: BinaryIO,
    *,
    filename: str = "",
    format: str | None = None,  # the API's field name
    text_column: str | None = None,
    label_column: str | None = None,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
    schema: DatasetSchema | None = None,
) -> DatasetReader:
    """Recognise the file's format and schema from its start; the reader yields examples.

    With `schema` (as recorded when the file was first read) nothing is inferred again."""
    head = stream.read(SNIFF_BYTES)
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
    return DatasetReader(schema, chain(sample, records), header, max_problems)


class DatasetReader:
    """The examples of one file under its schema; `report()` once they have all been read."""

    def __init__(
        self,
        schema: DatasetSchema,
        records: Iterator[Record],
        header: RawRecord | None,
        max_problems: int,
    ) -> None:
        self.schema = schema
        self._records = records
        self._header = header
        self._problems = ReportBuilder(max_problems)
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
            return self._tokens_tags(record, values)
        if source is Source.CHAT:
            return self._chat(record.line, values)
        if source is Source.PROMPT_COMPLETION:
            return self._prompt_completion(record.line, values)
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

    def _missing(self, line: int, values: Mapping[str, Any], column: str, code: str) -> None:
        hint = None
        others = [str(key) for key in values if key != column]
        close = difflib.get_close_matches(column, others, n=1, cutoff=0.75)
        if close:
            hint = f"this row has {close[0]!r}: did you mean {column!r}?"
        what = "no label" if code == "missing_label" else f"no {column!r} field"
        self._problems.add(line, code, what, column=column, hint=hint)

    def _text(self, line: int, values: Mapping[str, Any], column: str) -> str | None:
        if column not in values:
            self._missing(line, values, column, "missing_column")
            return None
        text = values[column]
        if not isinstance(text, str):
            self._problems.add(
                line,
                "invalid_value",
                f"{column!r} is {_kind(text)}, not a string",
                column=column,
                hint="write the text as a JSON string",
            )
            return None
        if not text.strip():
            self._problems.add(line, "empty_text", f"{column!r} is empty", column=column)
            return None
        return text

    def _text_label(self, line: int, values: Mapping[str, Any]) -> Example | None:
        assert self.schema.text_column is not None  # every text schema names one
        text = self._text(line, values, self.schema.text_column)
        column = self.schema.label_column
        if column is None:
            return None if text is None else {"text": text}
        raw = values.get(column)
        label: str | None = None
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            self._missing(line, values, column, "missing_label")
        elif isinstance(raw, bool) or not isinstance(raw, str | int):
            self._problems.add(
                line,
                "invalid_value",
                f"the label is {_kind(raw)}; it must be a string or an integer",
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

    def _tokens_tags(self, record: RawRecord, values: Mapping[str, Any]) -> Example | None:
        tokens_column = self.schema.tokens_column or "tokens"
        tags_column = self.schema.tags_column or "tags"
        line = record.line
        if self.schema.format is Format.CONLL:  # read as lists already; columns named singly
            tokens, tags = values["tokens"], values["tags"]
        else:
            tokens, tags = values.get(tokens_column), values.get(tags_column)
        ok = True
        for column, value in ((tokens_column, tokens), (tags_column, tags)):
            if value is None:
                self._missing(line, values, column, "missing_column")
                ok = False
            elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self._problems.add(
                    line,
                    "invalid_value",
                    f"{column!r} must be a list of strings, not {_kind(value)}",
                    column=column,
                    hint='write tokens and tags as lists of strings, e.g. ["Paris"] and ["B-LOC"]',
                )
                ok = False
        if not ok:
            return None
        assert isinstance(tokens, list)
        assert isinstance(tags, list)
        if not tokens or not all(token.strip() for token in tokens):
            self._problems.add(
                line, "empty_text", "no tokens, or an empty token", column=tokens_column
            )
            return None
        if len(tokens) != len(tags):
            self._problems.add(
                line,
                "length_mismatch",
                f"{len(tokens)} tokens but {len(tags)} tags",
                column=tags_column,
            )
            return None
        checked = self._bio(record, tokens, tags, tags_column)
        return None if checked is None else {"tokens": list(tokens), "tags": checked}

    def _bio(
        self, record: RawRecord, tokens: Sequence[str], tags: Sequence[str], column: str
    ) -> list[str] | None:
        """The tags as BIO (IOB1 converted), or None after reporting each bad tag."""
        lines = record.token_lines or (record.line,) * len(tags)
        iob1 = self.schema.tag_scheme is TagScheme.IOB1
        result: list[str] = []
        ok = True
        previous = "O"
        for index, (token, tag) in enumerate(zip(tokens, tags, strict=True)):
            where = f"token {index + 1} ({_short(token)})"
            if not BIO_TAG.match(tag):
                self._problems.add(
                    lines[index],
                    "invalid_tag",
                    f"tag {_short(tag)} on {where} is not O, B-TYPE or I-TYPE",
                    column=column,
                )
                ok, previous = False, "O"
                result.append("O")
                continue
            continues = tag[2:] == previous[2:] and previous != "O"
            if tag.startswith("I-") and not continues:
                if iob1:
                    tag = "B-" + tag[2:]
                else:
                    self._problems.add(
                        lines[index],
                        "inconsistent_bio",
                        f"tag {tag} on {where} follows {previous}: an I- tag must continue an "
                        f"entity of type {tag[2:]}",
                        column=column,
                    )
                    ok = False
            result.append(tag)
            previous = tag
        return result if ok else None

    def _chat(self, line: int, values: Mapping[str, Any]) -> Example | None:
        messages = values.get("messages")
        if messages is None:
            self._missing(line, values, "messages", "missing_column")
            return None
        if not isinstance(messages, list) or not messages:
            self._problems.add(
                line,
                "invalid_value",
                f"'messages' is {_kind(messages)}; it must be a non-empty list of messages",
                column="messages",
                hint='write [{"role": "user", "content": "..."}, '
                '{"role": "assistant", "content": "..."}]',
            )
            return None
        rendered: list[dict[str, str]] = []
        ok = True
        for index, message in enumerate(messages):
            column = f"messages[{index}]"
            if not isinstance(message, dict):
                self._problems.add(
                    line,
                    "invalid_value",
                    f"{column} is {_kind(message)}, not an object",
                    column=column,
                )
                ok = False
                continue
            role = message.get("role")
            if role not in CHAT_ROLES:
                self._problems.add(
                    line,
                    "invalid_value",
                    f"{column}.role is {_short(role)}",
                    column=f"{column}.role",
                    hint=f"use one of {', '.join(CHAT_ROLES)}",
                )
                ok = False
                continue
            content = _message_text(message)
            if content is None:
                self._problems.add(
                    line,
                    "invalid_value",
                    f"{column}.content is {_kind(message.get('content'))}",
                    column=f"{column}.content",
                    hint="write the content as a string or a list of text parts",
                )
                ok = False
            elif not content.strip():
                self._problems.add(
                    line, "empty_text", f"{column}.content is empty", column=f"{column}.content"
                )
                ok = False
            else:
                rendered.append({"role": str(role), "content": content})
        if ok and not any(m["role"] == "assistant" for m in rendered):
            self._problems.add(
                line,
                "invalid_value",
                "no assistant message: nothing to learn from",
                column="messages",
                hint="end each conversation with the assistant's answer",
            )
            ok = False
        return {"text": render_chat(rendered), "messages": rendered} if ok else None

    def _prompt_completion(self, line: int, values: Mapping[str, Any]) -> Example | None:
        prompt = values.get("prompt")
        if prompt is None:
            self._missing(line, values, "prompt", "missing_column")
        elif not isinstance(prompt, str):
            self._problems.add(
                line, "invalid_value", f"'prompt' is {_kind(prompt)}, not a string", column="prompt"
            )
            prompt = None
        completion = self._text(line, values, "completion")
        if prompt is None or completion is None:
            return None
        return {"text": prompt + completion, "prompt": prompt, "completion": completion}

    # -- the whole file -----------------------------------------------------------------------

    def _finish(self) -> None:
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


def _message_text(message: Mapping[str, Any]) -> str | None:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    if content is None and message.get("tool_calls"):
        return json.dumps(message["tool_calls"], sort_keys=True, ensure_ascii=False)
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
