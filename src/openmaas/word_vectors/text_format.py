"""Word vectors in the text format of word2vec and GloVe, read safely into `WordVectors`.

One word per line: the word, then its numbers, separated by spaces. word2vec's files start
with a header line `<words> <dimensions>`; GloVe's do not (the first line is a vector, and
its length fixes the dimensions). Nothing is evaluated or unpickled: a line is split and
its numbers parsed as floats. Limits bound what one file may cost: `max_bytes` read in all,
`MAX_DIMENSIONS` numbers per word, `MAX_WORDS` words, `MAX_LINE_BYTES` per line. A line
that breaks the format (too few or too many numbers, a number that is not one, NaN or
infinity, bytes that are not UTF-8) is refused with a 400 naming the line. A word seen
again is skipped (the first, most frequent, vector stays) and counted.

The vectors' words keep their case. The served tokenizer lowercases unless the file has
cased words (word2vec's GoogleNews vectors do, GloVe's do not), so a text is cut into the
words the file has.

Example::

    with open("glove.6B.50d.txt", "rb") as stream:
        imported = read_text_vectors(stream, max_bytes=1 << 30)
    save_word_vectors(directory, imported.vectors)
    imported.skipped_repeats  # 0
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, NoReturn

import numpy as np

from openmaas.errors import InvalidRequest, PayloadTooLarge
from openmaas.word_vectors.saved import WordVectors
from openmaas.word_vectors.tokenizer import WordTokenizer

MAX_DIMENSIONS = 1024  # word2vec's and GloVe's published vectors have 25 to 300
MAX_WORDS = 4_000_000  # GloVe's largest vocabulary (Common Crawl 840B) has 2.2 million
MAX_LINE_BYTES = 64 * 1024  # a word and 1,024 numbers of up to ~60 characters each fit
PARAM = "file"
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True)
class ImportedVectors:
    vectors: WordVectors
    header: bool  # whether the file started with word2vec's `<words> <dimensions>` line
    skipped_repeats: int  # lines whose word an earlier line already gave


def read_text_vectors(stream: IO[bytes], *, max_bytes: int) -> ImportedVectors:
    """The vectors of a word2vec/GloVe text file; 400 naming the line that breaks the
    format, 413 past `max_bytes`."""
    words: list[str] = []
    rows: list[np.ndarray[tuple[int], np.dtype[np.float32]]] = []
    seen: set[str] = set()
    dimensions: int | None = None
    declared_words: int | None = None
    header = False
    repeats = 0
    for number, line in _lines(stream, max_bytes):
        fields = line.split()
        if not fields:
            continue  # blank lines (a trailing newline, say) carry nothing
        if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
            declared_words, dimensions = int(fields[0]), int(fields[1])
            _check_dimensions(dimensions, number)
            if declared_words > MAX_WORDS:
                _refuse(
                    number, f"the header declares {declared_words:,} words; at most {MAX_WORDS:,}"
                )
            header = True
            continue
        word, numbers = fields[0], fields[1:]
        if dimensions is None:
            dimensions = len(numbers)
            _check_dimensions(dimensions, number)
        if len(numbers) != dimensions:
            _refuse(
                number,
                f"{word!r} has {len(numbers)} numbers; every word needs {dimensions} "
                f"(a word, then {dimensions} numbers, separated by spaces)",
            )
        if word in seen:
            repeats += 1
            continue
        if len(words) >= MAX_WORDS:
            _refuse(number, f"more than {MAX_WORDS:,} words")
        rows.append(_numbers(numbers, number))
        words.append(word)
        seen.add(word)
    if not words:
        raise InvalidRequest(
            "the file holds no word vectors: write one word per line followed by its numbers "
            "(word2vec or GloVe text format)",
            param=PARAM,
        )
    if declared_words is not None and declared_words != len(words) + repeats:
        raise InvalidRequest(
            f"the header (line 1) declares {declared_words:,} words; the file holds "
            f"{len(words) + repeats:,}",
            param=PARAM,
        )
    cased = any(word != word.lower() for word in words)
    vectors = WordVectors(
        words=words,
        counts=[0] * len(words),  # unknown: the file gives no frequencies, only their order
        vectors=np.stack(rows),
        tokenizer=WordTokenizer(lowercase=not cased),
        normalize="l2",
        extra={"trained_by": {"source": "text-vectors", "header": header}},
    )
    return ImportedVectors(vectors=vectors, header=header, skipped_repeats=repeats)


def _lines(stream: IO[bytes], max_bytes: int) -> Iterator[tuple[int, str]]:
    read = 0
    for number, raw in enumerate(iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b""), 1):
        read += len(raw)
        if read > max_bytes:
            raise PayloadTooLarge(
                f"the vectors file is larger than {max_bytes / (1024 * 1024):.0f} MiB",
                param=PARAM,
            )
        if len(raw) > MAX_LINE_BYTES:
            _refuse(number, f"longer than {MAX_LINE_BYTES:,} bytes")
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError:
            _refuse(number, "not UTF-8 text")


def _numbers(fields: list[str], number: int) -> np.ndarray[tuple[int], np.dtype[np.float32]]:
    try:
        values = [float(field) for field in fields]
    except ValueError:
        bad = next(f for f in fields if not _is_float(f))
        _refuse(number, f"{bad[:40]!r} is not a number")
    if not all(math.isfinite(v) for v in values):
        _refuse(number, "NaN or infinite values")
    if any(abs(v) > FLOAT32_MAX for v in values):
        _refuse(number, "a value beyond float32's range")
    row: np.ndarray[tuple[int], np.dtype[np.float32]] = np.asarray(values, dtype=np.float32)
    return row


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_dimensions(dimensions: int, number: int) -> None:
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        _refuse(number, f"{dimensions} dimensions; vectors may have 1 to {MAX_DIMENSIONS}")


def _refuse(number: int, problem: str) -> NoReturn:
    raise InvalidRequest(f"vectors file, line {number}: {problem}", param=PARAM)
