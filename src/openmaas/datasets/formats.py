"""Dataset file formats: recognising one, and reading a file into raw records.

Four formats: JSON Lines (one object a line), CSV (RFC 4180 quoting), TSV (no quoting: a
tab always separates fields) and the CoNLL column format (one token a line, its tag in the
last column, a blank line between sentences, `-DOCSTART-` lines ignored); and plain text,
one text a line, read only when asked for (`format=text`: a `.txt` file is told apart by
its content as one of the others). Readers work on
the stored bytes line by line, so every record knows the line it came from, and a line that
is not UTF-8 is reported by number instead of failing the whole file.

Examples are plain dicts; `canonical_json` is the serialization the content hash is taken
over, so the same examples hash alike whichever format carried them.

Example::

    with open("train.jsonl", "rb") as handle:
        head = handle.read(SNIFF_BYTES)
        fmt = detect_format("train.jsonl", head, None)  # Format.JSONL
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

import orjson

from openmaas.errors import InvalidRequest

Example = dict[str, Any]

# How much of a file is looked at to recognise its format.
SNIFF_BYTES = 64 * 1024
# A CoNLL tag: O, or B-/I- and an entity type.
BIO_TAG = re.compile(r"O|[BI]-\S+")  # fullmatch: `$` would pass "B-X\n"
UTF8_BOM = b"\xef\xbb\xbf"


class Format(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    TSV = "tsv"
    CONLL = "conll"
    TEXT = "text"  # one text a line
    IMAGE_FOLDERS = "image-folders"  # a .zip or .tar.gz of one folder per class (images.py)


_EXTENSIONS = {
    ".jsonl": Format.JSONL,
    ".jsonlines": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".json": Format.JSONL,
    ".csv": Format.CSV,
    ".tsv": Format.TSV,
    ".tab": Format.TSV,
    ".conll": Format.CONLL,
    ".conll03": Format.CONLL,
    ".iob": Format.CONLL,
    ".bio": Format.CONLL,
}
_ALIASES = {
    "json": Format.JSONL,
    "jsonlines": Format.JSONL,
    "ndjson": Format.JSONL,
    "txt": Format.TEXT,
    "zip": Format.IMAGE_FOLDERS,
    "tar.gz": Format.IMAGE_FOLDERS,
    "tgz": Format.IMAGE_FOLDERS,
}


def _unreadable(message: str, param: str = "file") -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_file")


def parse_format(requested: str) -> Format:
    """A format name as a client writes it (`jsonl`, `json`, `csv`, `tsv`, `conll`)."""
    name = requested.strip().lower()
    try:
        return _ALIASES.get(name) or Format(name)
    except ValueError:
        known = ", ".join(f.value for f in Format)
        raise InvalidRequest(
            f"unknown dataset format {requested!r} (formats: {known})", param="format"
        ) from None


def detect_format(filename: str, head: bytes, requested: str | None) -> Format:
    """The file's format: as requested, else by extension, else by content.

    Raises `InvalidRequest` (code `invalid_file`) for what no format can read: an empty file,
    a binary, compressed or UTF-16 file, or text whose format cannot be told."""
    _check_text(head)
    if requested:
        return parse_format(requested)
    by_name = _EXTENSIONS.get(PurePosixPath(filename.lower()).suffix)
    if by_name is not None:
        return by_name
    return _sniff(head)


def _check_text(head: bytes) -> None:
    if not head.strip():
        raise _unreadable("the file is empty")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _unreadable("the file is UTF-16 encoded; save it as UTF-8 and upload it again")
    if head.startswith((b"\x1f\x8b", b"PK\x03\x04", b"BZh", b"\xfd7zXZ")):
        raise _unreadable("the file is compressed; upload the uncompressed file")
    if b"\x00" in head:
        raise _unreadable("the file is binary, not text; upload JSONL, CSV, TSV or CoNLL")


def _sniff(head: bytes) -> Format:
    text = head.removeprefix(UTF8_BOM).decode("utf-8", errors="replace")
    every = text.splitlines()[:500]
    # The last line of the head may be cut short; judge on whole lines when there are some.
    if len(every) > 1 and not text.endswith("\n"):
        every = every[:-1]
    lines = [line.split() for line in every if line.strip()]
    if not lines:
        raise _unreadable("the file is empty")
    first = next(line for line in every if line.strip()).lstrip()
    if first.startswith("{"):
        return Format.JSONL
    if first.startswith("-DOCSTART-"):
        return Format.CONLL
    # CoNLL: short lines whose last field is a BIO tag, sentences apart by blank lines.
    tagged = sum(1 for fields in lines if len(fields) > 1 and BIO_TAG.fullmatch(fields[-1]))
    if tagged >= 0.9 * len(lines) and len(lines) < len(every):
        return Format.CONLL
    if "\t" in first:
        return Format.TSV
    if "," in first:
        return Format.CSV
    raise _unreadable(
        "cannot tell the file's format from its name or content; name it .jsonl, .csv, .tsv "
        "or .conll, or pass format (format=text for one text a line)"
    )


# -- lines --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One physical line, decoded. `bad_encoding` describes the first byte that is not
    UTF-8 (the text then holds U+FFFD in its place)."""

    number: int  # 1-based
    text: str
    bad_encoding: str | None = None


def split_lines(chunks: Iterable[bytes], *, keep_ends: bool = False) -> Iterator[Line]:
    """Decode a byte stream line by line (`\\n` or `\\r\\n`), numbering the lines."""
    number = 0
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            number += 1
            yield _decode(number, raw + b"\n" if keep_ends else raw.removesuffix(b"\r"))
    if pending:
        yield _decode(number + 1, pending.removesuffix(b"\r"))


def _decode(number: int, raw: bytes) -> Line:
    if number == 1:
        raw = raw.removeprefix(UTF8_BOM)
    try:
        return Line(number, raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8"
        return Line(number, raw.decode("utf-8", errors="replace"), bad_encoding=where)


# -- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read, before the schema gives its fields a meaning.

    JSONL: the line's object. CSV/TSV: the row's cells (`cells`), named by the header later.
    CoNLL: {"tokens": [...], "tags": [...]} with the line of every token."""

    line: int  # the first physical line of the record
    values: Mapping[str, Any]
    cells: tuple[str, ...] = ()
    last_line: int = 0  # CSV/TSV: a quoted field may run over several lines
    token_lines: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line (or CSV row) that could not be read at all."""

    line: int
    code: str  # bad_encoding | invalid_json | invalid_row | missing_column
    detail: str
    column: str | None = None


Record = RawRecord | Unreadable


def read_jsonl(lines: Iterable[Line]) -> Iterator[Record]:
    for line in lines:
        if line.bad_encoding is not None:
            yield Unreadable(line.number, "bad_encoding", line.bad_encoding)
            continue
        text = line.text.strip()
        if not text:
            continue  # blank lines (a trailing newline, spacing) carry nothing
        try:
            value = orjson.loads(text)
        except (orjson.JSONDecodeError, RecursionError) as exc:
            yield Unreadable(line.number, "invalid_json", f"not valid JSON ({exc})")
            continue
        if not isinstance(value, dict):
            kind = "an array" if isinstance(value, list) else "a single value"
            yield Unreadable(line.number, "invalid_json", f"the line holds {kind}, not an object")
            continue
        yield RawRecord(line.number, value)


def read_table(lines: Iterable[Line], fmt: Format) -> Iterator[Record]:
    """CSV or TSV rows as `RawRecord.cells` (the header row included); blank rows skipped."""
    options: dict[str, Any] = (
        {"delimiter": ",", "quotechar": '"', "doublequote": True}
        if fmt is Format.CSV
        else {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    )
    current = 0
    bad: dict[int, str] = {}

    def texts() -> Iterator[str]:
        nonlocal current
        for line in lines:
            current = line.number
            if line.bad_encoding is not None:
                bad[line.number] = line.bad_encoding
            yield line.text

    reader = csv.reader(texts(), **options)
    while True:
        first = current + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Unreadable(first, "invalid_row", f"not a valid {fmt.value.upper()} row ({exc})")
            continue
        problems = [number for number in range(first, current + 1) if number in bad]
        if problems:
            number = problems[0]
            yield Unreadable(number, "bad_encoding", bad.pop(number))
            for number in problems[1:]:
                bad.pop(number)
            continue
        if not any(cell.strip() for cell in cells):
            continue
        yield RawRecord(first, {}, cells=tuple(cells), last_line=current)


def read_text_lines(lines: Iterable[Line]) -> Iterator[Record]:
    """Every line that is not blank as `{"text": line}`, the line as it is."""
    for line in lines:
        if line.bad_encoding is not None:
            yield Unreadable(line.number, "bad_encoding", line.bad_encoding)
        elif line.text.strip():
            yield RawRecord(line.number, {"text": line.text})


def read_conll(lines: Iterable[Line]) -> Iterator[Record]:
    """One record per sentence. A sentence with an unreadable line is reported by that line
    and left out whole: its tags would no longer line up."""
    tokens: list[str] = []
    tags: list[str] = []
    token_lines: list[int] = []
    broken = False

    def sentence() -> Iterator[Record]:
        if tokens and not broken:
            values = {"tokens": list(tokens), "tags": list(tags)}
            yield RawRecord(token_lines[0], values, token_lines=tuple(token_lines))

    for line in lines:
        fields = line.text.split()
        if not fields or fields[0] == "-DOCSTART-":
            yield from sentence()
            tokens.clear()
            tags.clear()
            token_lines.clear()
            broken = False
            continue
        if line.bad_encoding is not None:
            yield Unreadable(line.number, "bad_encoding", line.bad_encoding)
            broken = True
        elif len(fields) < 2:
            yield Unreadable(
                line.number, "missing_column", "a token without a tag column", column="tag"
            )
            broken = True
        else:
            tokens.append(fields[0])
            tags.append(fields[-1])
            token_lines.append(line.number)
    yield from sentence()


# -- examples -------------------------------------------------------------------------------


def render_chat(messages: Sequence[Mapping[str, str]]) -> str:
    """A chat as one training text, ChatML-style: each message between `<|im_start|>role`
    and `<|im_end|>` on lines of their own."""
    return "\n".join(
        f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>" for message in messages
    )


def canonical_json(example: Mapping[str, Any]) -> bytes:
    """One example as the content hash sees it: JSON, keys sorted, no spaces, UTF-8; the
    bytes of `json.dumps(example, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`
    (orjson writes the same, several times faster)."""
    return orjson.dumps(example, option=orjson.OPT_SORT_KEYS)


class ContentHasher:
    """sha256 over the examples as canonical JSON Lines, in file order::

    hasher = ContentHasher()
    for example in examples:
        hasher.add(example)
    hasher.hexdigest()
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, example: Mapping[str, Any]) -> None:
        self._digest.update(canonical_json(example) + b"\n")

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def content_sha256(examples: Iterable[Mapping[str, Any]]) -> str:
    hasher = ContentHasher()
    for example in examples:
        hasher.add(example)
    return hasher.hexdigest()
