"""Plain text dataset files (`format=text`): one example per line, read as they are, for the
recipes that learn from texts alone (word2vec). Only an explicit format selects them: a
`.txt` file is still told apart by its content."""

from __future__ import annotations

import io

import pytest

from openmaas.datasets.formats import Format
from openmaas.datasets.schema import Source
from openmaas.datasets.validate import open_dataset
from openmaas.errors import InvalidRequest
from openmaas.tasks.names import Task

NEWS = (
    b"Bushfires near Sydney, the worst in years, forced hundreds from their homes.\n"
    b"\n"
    b'\tA "quoted" line\twith tabs\n'
    b"Taliban fighters retreated from Kandahar\r\n"
)


@pytest.mark.parametrize("name", ["text", "txt", "TEXT"])
def test_each_line_that_is_not_blank_is_one_text_as_it_is(name: str) -> None:
    reader = open_dataset(io.BytesIO(NEWS), filename="news.txt", format=name)
    examples = list(reader)
    assert examples == [
        {"text": "Bushfires near Sydney, the worst in years, forced hundreds from their homes."},
        {"text": '\tA "quoted" line\twith tabs'},
        {"text": "Taliban fighters retreated from Kandahar"},
    ]
    schema = reader.schema
    assert (schema.format, schema.source, schema.task) == (
        Format.TEXT,
        Source.TEXT,
        Task.TEXT_GENERATION,
    )
    report = reader.report()
    assert report.ok
    assert (report.rows_read, report.rows_valid) == (3, 3)


def test_a_line_that_is_not_utf8_is_reported_by_number() -> None:
    reader = open_dataset(io.BytesIO(b"fine\nbad \xff byte\nfine again\n"), format="text")
    assert [e["text"] for e in reader] == ["fine", "fine again"]
    [problem] = reader.report().problems
    assert (problem.line, problem.code) == (2, "bad_encoding")


def test_only_an_explicit_format_reads_plain_text() -> None:
    # Without it, a .txt of sentences with commas is sniffed as CSV, one without is refused.
    sniffed = open_dataset(io.BytesIO(b"one, two\nthree, four\n"), filename="notes.txt")
    assert sniffed.schema.format is Format.CSV
    with pytest.raises(InvalidRequest, match="format=text for one text a line"):
        open_dataset(io.BytesIO(b"just some words\nmore words\n"), filename="notes.txt")


def test_plain_text_has_no_label_column() -> None:
    with pytest.raises(InvalidRequest, match="a plain text file has one column, 'text'"):
        open_dataset(io.BytesIO(NEWS), format="text", label_column="label")
