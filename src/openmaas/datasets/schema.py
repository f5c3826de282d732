"""What a dataset file holds: its task and which columns carry the text, label, tokens, tags.

Inferred from the first rows (`SAMPLE_RECORDS`): columns by common names first (`text`,
`sentence`, `label`, `class`, `tokens`, `tags`...), then by content (the text column holds
the longest values; the label column repeats a few short values). Explicit `text_column` /
`label_column` override both. Every guess made from content is written down in `notes`.

Example::

    schema = infer_table_schema(Format.CSV, [("sentence", "label"), ("good", "1")], None, None)
    schema.task, schema.text_column, schema.label_column  # text-classification sentence label
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from openmaas.datasets.formats import BIO_TAG, Format
from openmaas.errors import InvalidRequest
from openmaas.tasks.names import Task

# Records read before the schema is fixed (the rest are checked against it).
SAMPLE_RECORDS = 1000
TEXT_NAMES = (
    "text",
    "sentence",
    "content",
    "document",
    "review",
    "body",
    "utterance",
    "question",
    "input",
    "message",
    "comment",
    "tweet",
    "description",
    "title",
)
LABEL_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "intent", "topic")
TOKENS_NAMES = ("tokens", "words")
TAGS_NAMES = ("tags", "ner_tags", "labels", "ner")
# Keys of an OpenAI chat fine-tuning line besides `messages`: accepted, not used.
CHAT_EXTRA_KEYS = ("tools", "functions", "parallel_tool_calls")
MAX_HEADER_CELL = 64
MAX_LABEL_CHARS = 64
MAX_LABELS = 1000


class Source(StrEnum):
    """The shape examples are read from."""

    TEXT_LABEL = "text-label"
    TEXT = "text"
    TOKENS_TAGS = "tokens-tags"
    CHAT = "chat"
    PROMPT_COMPLETION = "prompt-completion"
    IMAGE_LABEL = "image-label"  # datasets of images (images.py)


class TagScheme(StrEnum):
    BIO = "bio"  # IOB2: every entity starts with B-
    IOB1 = "iob1"  # I- starts an entity, B- only between two adjacent ones: converted to BIO


_TASKS = {
    Source.TEXT_LABEL: Task.TEXT_CLASSIFICATION,
    Source.TEXT: Task.TEXT_GENERATION,
    Source.TOKENS_TAGS: Task.TOKEN_CLASSIFICATION,
    Source.CHAT: Task.TEXT_GENERATION,
    Source.PROMPT_COMPLETION: Task.TEXT_GENERATION,
    Source.IMAGE_LABEL: Task.IMAGE_CLASSIFICATION,
}


@dataclass(frozen=True, slots=True)
class DatasetSchema:
    format: Format
    source: Source
    columns: tuple[str, ...]  # the header, the keys of the first lines, or CoNLL's token/tag
    has_header: bool = False
    text_column: str | None = None
    label_column: str | None = None
    tokens_column: str | None = None
    tags_column: str | None = None
    tag_scheme: TagScheme | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def task(self) -> Task:
        return _TASKS[self.source]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format.value,
            "task": self.task.value,
            "source": self.source.value,
            "columns": list(self.columns),
            "has_header": self.has_header,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "tokens_column": self.tokens_column,
            "tags_column": self.tags_column,
            "tag_scheme": self.tag_scheme.value if self.tag_scheme else None,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSchema:
        scheme = data.get("tag_scheme")
        return cls(
            format=Format(data["format"]),
            source=Source(data["source"]),
            columns=tuple(data.get("columns", ())),
            has_header=bool(data.get("has_header", False)),
            text_column=data.get("text_column"),
            label_column=data.get("label_column"),
            tokens_column=data.get("tokens_column"),
            tags_column=data.get("tags_column"),
            tag_scheme=TagScheme(scheme) if scheme else None,
            notes=tuple(data.get("notes", ())),
        )


# -- CSV / TSV ------------------------------------------------------------------------------


def infer_table_schema(
    fmt: Format,
    rows: Sequence[Sequence[str]],
    text_column: str | None,
    label_column: str | None,
) -> DatasetSchema:
    """`rows`: the first rows of a CSV/TSV file, the header (if any) included."""
    notes: list[str] = []
    first = [cell.strip() for cell in rows[0]]
    requested = {name for name in (text_column, label_column) if name}
    has_header = _looks_like_header(first, rows[1:], requested)
    if has_header:
        columns = _unique_names(first, notes)
        body = rows[1:]
    else:
        width = max(len(row) for row in rows)
        columns = [f"column_{index + 1}" for index in range(width)]
        notes.append(f"no header row: columns are named column_1 to column_{width}")
        body = rows
    sample = [dict(zip(columns, row, strict=False)) for row in body]
    text, label = choose_columns(columns, sample, text_column, label_column, notes)
    return DatasetSchema(
        format=fmt,
        source=Source.TEXT_LABEL if label else Source.TEXT,
        columns=tuple(columns),
        has_header=has_header,
        text_column=text,
        label_column=label,
        notes=tuple(notes),
    )


def _looks_like_header(
    first: Sequence[str], body: Sequence[Sequence[str]], requested: set[str]
) -> bool:
    names = {cell.lower() for cell in first}
    if requested & set(first) or names & {*TEXT_NAMES, *LABEL_NAMES}:
        return True
    if len(set(first)) < len(first):
        return False
    if any(not cell or len(cell) > MAX_HEADER_CELL or _is_number(cell) for cell in first):
        return False
    # A column name does not come back as a value below it (a label would).
    for index, cell in enumerate(first):
        if any(len(row) > index and row[index].strip() == cell for row in body):
            return False
    return True


def _unique_names(header: Sequence[str], notes: list[str]) -> list[str]:
    names: list[str] = []
    for index, cell in enumerate(header):
        name = cell or f"column_{index + 1}"
        if name in names:
            renamed = f"{name}_{index + 1}"
            notes.append(f"column {index + 1} repeats the name {name!r}: named {renamed!r}")
            name = renamed
        names.append(name)
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- JSONL ----------------------------------------------------------------------------------


def infer_jsonl_schema(
    sample: Sequence[Mapping[str, Any]], text_column: str | None, label_column: str | None
) -> DatasetSchema:
    """`sample`: the objects of the first readable lines."""
    keys: Counter[str] = Counter()
    order: dict[str, None] = {}
    for record in sample:
        keys.update(record.keys())
        order.update(dict.fromkeys(record))
    half = max(1, len(sample) / 2)
    columns = tuple(order)
    if not (text_column or label_column):
        if keys["messages"] >= half:
            return DatasetSchema(Format.JSONL, Source.CHAT, columns)
        if keys["prompt"] >= half and keys["completion"] >= half:
            return DatasetSchema(Format.JSONL, Source.PROMPT_COMPLETION, columns)
        if keys["image"] >= half:  # datasets of images (images.py)
            image_labels = next((name for name in LABEL_NAMES if keys[name] >= half), "label")
            return DatasetSchema(
                Format.JSONL,
                Source.IMAGE_LABEL,
                columns,
                text_column="image",
                label_column=image_labels,
            )
        tokens = _list_key(sample, TOKENS_NAMES, half)
        tags = _list_key(sample, TAGS_NAMES, half)
        if tokens and tags:
            scheme = detect_tag_scheme(
                record[tags] for record in sample if isinstance(record.get(tags), list)
            )
            return DatasetSchema(
                Format.JSONL,
                Source.TOKENS_TAGS,
                columns,
                tokens_column=tokens,
                tags_column=tags,
                tag_scheme=scheme,
                notes=_scheme_notes(scheme),
            )
    for name, param in ((text_column, "text_column"), (label_column, "label_column")):
        if name and name not in keys:
            raise InvalidRequest(
                f"{param} {name!r}: no line of the first {len(sample)} has that field "
                f"(fields: {', '.join(columns) or 'none'})",
                param=param,
            )
    notes: list[str] = []
    text, label = choose_columns(columns, sample, text_column, label_column, notes)
    return DatasetSchema(
        format=Format.JSONL,
        source=Source.TEXT_LABEL if label else Source.TEXT,
        columns=columns,
        text_column=text,
        label_column=label,
        notes=tuple(notes),
    )


def _list_key(sample: Sequence[Mapping[str, Any]], names: Sequence[str], half: float) -> str | None:
    for name in names:
        if sum(1 for record in sample if isinstance(record.get(name), list)) >= half:
            return name
    return None


# -- plain text -----------------------------------------------------------------------------


def text_lines_schema(text_column: str | None, label_column: str | None) -> DatasetSchema:
    """One text a line: a single column, named `text`."""
    for name, param in ((text_column, "text_column"), (label_column, "label_column")):
        if name and name != "text":
            raise InvalidRequest(
                f"{param} {name!r}: a plain text file has one column, 'text'", param=param
            )
    return DatasetSchema(Format.TEXT, Source.TEXT, ("text",), text_column="text")


# -- CoNLL ----------------------------------------------------------------------------------


def infer_conll_schema(sample_tags: Iterable[Sequence[str]]) -> DatasetSchema:
    scheme = detect_tag_scheme(sample_tags)
    return DatasetSchema(
        format=Format.CONLL,
        source=Source.TOKENS_TAGS,
        columns=("token", "tag"),
        tokens_column="token",
        tags_column="tag",
        tag_scheme=scheme,
        notes=("tokens from the first column, tags from the last", *_scheme_notes(scheme)),
    )


def detect_tag_scheme(sequences: Iterable[Sequence[Any]]) -> TagScheme:
    """IOB1 when more entities open with I- than with B- (CoNLL-2003's own files), else BIO."""
    opened_by_i = opened_by_b = 0
    for tags in sequences:
        previous = "O"
        for tag in tags:
            if not isinstance(tag, str) or not BIO_TAG.fullmatch(tag):
                previous = "O"
                continue
            if tag != "O" and tag[2:] != previous[2:]:
                if tag[0] == "I":
                    opened_by_i += 1
                else:
                    opened_by_b += 1
            previous = tag
    return TagScheme.IOB1 if opened_by_i > opened_by_b else TagScheme.BIO


def _scheme_notes(scheme: TagScheme) -> tuple[str, ...]:
    if scheme is TagScheme.IOB1:
        return ("tags are IOB1 (I- opens an entity): converted to BIO",)
    return ()


# -- columns --------------------------------------------------------------------------------


def choose_columns(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    text_column: str | None,
    label_column: str | None,
    notes: list[str],
) -> tuple[str, str | None]:
    """(text column, label column or None): as requested, by name, else by content."""
    for name, param in ((text_column, "text_column"), (label_column, "label_column")):
        if name and name not in columns:
            raise InvalidRequest(
                f"{param} {name!r} is not a column of this file (columns: {', '.join(columns)})",
                param=param,
            )
    text = text_column or _by_name(columns, TEXT_NAMES, exclude=label_column)
    if text is None:
        text = _by_content_text(columns, rows, exclude=label_column)
        if text is None:
            raise InvalidRequest(
                f"no text column found among {', '.join(columns) or 'no columns'}; name one "
                "with text_column",
                param="text_column",
                code="invalid_file",
            )
        notes.append(f"text column {text!r} chosen by content (the longest values)")
    label = label_column or _by_name(columns, LABEL_NAMES, exclude=text)
    if label is None:
        label = _by_content_label(columns, rows, exclude=text)
        if label is not None:
            notes.append(f"label column {label!r} chosen by content (a few repeated values)")
    return text, label


def _by_name(columns: Sequence[str], names: Sequence[str], exclude: str | None) -> str | None:
    lowered: dict[str, str] = {}
    for column in columns:
        lowered.setdefault(column.strip().lower(), column)
    for name in names:
        found = lowered.get(name)
        if found is not None and found != exclude:
            return found
    return None


def _values(rows: Sequence[Mapping[str, Any]], column: str) -> list[Any]:
    return [row[column] for row in rows if row.get(column) not in (None, "")]


def _by_content_text(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]], exclude: str | None
) -> str | None:
    best, best_length = None, 0.0
    for column in columns:
        values = _values(rows, column)
        texts = [v for v in values if isinstance(v, str) and not _is_number(v)]
        if column == exclude or not values or len(texts) < len(values) / 2:
            continue
        mean = sum(len(v) for v in texts) / len(texts)
        if mean > best_length:
            best, best_length = column, mean
    return best


def _by_content_label(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]], exclude: str
) -> str | None:
    best, best_distinct = None, MAX_LABELS + 1
    for column in columns:
        values = _values(rows, column)
        if column == exclude or not values:
            continue
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            continue
        distinct = {str(v) for v in values}
        short = all(len(str(v)) <= MAX_LABEL_CHARS for v in values)
        if short and 2 <= len(distinct) <= len(values) / 2 and len(distinct) < best_distinct:
            best, best_distinct = column, len(distinct)
    return best
