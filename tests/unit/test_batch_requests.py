"""A batch's input file is checked line by line before anything runs, as OpenAI does: each
problem is named with its line number, and a good file gives its requests in order."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from openmaas.batches.requests import (
    MAX_LISTED_PROBLEMS,
    BatchRequest,
    InvalidInputFile,
    check_request,
    read_lines,
)
from openmaas.errors import InvalidRequest

URL = "/v1/embeddings"


def request(custom_id: str, **changes: Any) -> dict[str, Any]:
    line = {"custom_id": custom_id, "method": "POST", "url": URL, "body": {"model": "m"}}
    line.update(changes)
    return line


def jsonl(*lines: object) -> io.BytesIO:
    return io.BytesIO(
        b"".join(
            (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n"
            for line in lines
        )
    )


def test_a_good_file_gives_its_requests_in_order_with_their_line_numbers() -> None:
    lines = read_lines(jsonl(request("a"), b"", request("b")), endpoint=URL)
    assert [(line.line, line.custom_id) for line in lines] == [(1, "a"), (3, "b")]
    assert lines[0].body == {"model": "m"}


def test_every_problem_is_named_with_its_line() -> None:
    with pytest.raises(InvalidInputFile) as refused:
        read_lines(
            jsonl(
                request("a"),
                b"{not json",
                request("a"),
                request("c", url="/v1/chat/completions"),
                request("d", method="GET"),
                request("e", body=[1]),
                request("f", body={"model": "m", "stream": True}),
                {"method": "POST", "url": URL, "body": {}},
                b"\xff\xfe",
            ),
            endpoint=URL,
        )
    problems = [(p.line, p.code) for p in refused.value.problems]
    assert problems == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "mismatched_url"),
        (5, "invalid_method"),
        (6, "invalid_body"),
        (7, "unsupported_value"),
        (8, "missing_custom_id"),
        (9, "invalid_json_line"),
    ]
    assert refused.value.status_code == 400
    assert refused.value.message.startswith("line 2: ")
    assert "(and 7 more)" in refused.value.message


def test_an_empty_file_and_long_lists_of_problems() -> None:
    with pytest.raises(InvalidInputFile) as empty:
        read_lines(io.BytesIO(b"\n\n"), endpoint=URL)
    assert [p.code for p in empty.value.problems] == ["empty_file"]
    many = jsonl(*[b"nope"] * (MAX_LISTED_PROBLEMS + 5))
    with pytest.raises(InvalidInputFile) as refused:
        read_lines(many, endpoint=URL)
    assert len(refused.value.problems) == MAX_LISTED_PROBLEMS
    assert refused.value.total == MAX_LISTED_PROBLEMS + 5


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"endpoint": "/v1/audio/transcriptions"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
    ],
)
def test_the_request_is_checked_before_its_file(changes: dict[str, Any], param: str) -> None:
    fields: dict[str, Any] = {"input_file_id": "file-1", "endpoint": URL, **changes}
    with pytest.raises(InvalidRequest) as refused:
        check_request(BatchRequest(**fields))
    assert refused.value.param == param
