"""What a batch asks for: its endpoint and window, and the requests of its input file.

An input file is JSON Lines, one request a line, in OpenAI's shape:
`{"custom_id": "a-1", "method": "POST", "url": "/v1/embeddings", "body": {...}}`. Every line
is checked before anything runs, as OpenAI does: valid JSON, a unique `custom_id`, `POST`,
the batch's endpoint as `url`, an object `body` that does not ask to stream. A file with
problems fails the batch, each problem named with its line number; a body the route
refuses (an unknown model, a wrong field) is that request's error, in the error file.

Example::

    with datasets.open_file(file_id, caller=SYSTEM) as handle:
        lines = read_lines(handle, endpoint="/v1/embeddings")  # or raises InvalidInputFile
    lines[0].custom_id, lines[0].body
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any

from openmaas.errors import InvalidRequest

# Every route a batch may run: OpenAI's, and the task routes it lacks. Streaming and file
# uploads (transcriptions) have no place in a file of JSON requests.
ENDPOINTS = (
    "/v1/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/moderations",
    "/v1/classify",
    "/v1/ner",
    "/v1/translate",
    "/v1/summarize",
    "/v1/rerank",
)
# OpenAI's one window, and its limit on requests per batch.
COMPLETION_WINDOWS: Mapping[str, timedelta] = {"24h": timedelta(hours=24)}
MAX_REQUESTS = 50_000
MAX_CUSTOM_ID_CHARS = 512
MAX_METADATA_PAIRS = 16  # as OpenAI: 16 pairs, keys up to 64 characters, values up to 512
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_LISTED_PROBLEMS = 100  # a failed file lists this many problems (all are counted)


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """A batch to create: the requests file (purpose `batch`), the route they all go to."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of the input file."""

    line: int  # 1-based, as editors count
    custom_id: str
    url: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LineProblem:
    """Why the input file cannot run, in OpenAI's batch error shape."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


class InvalidInputFile(InvalidRequest):
    """The input file has problems: the batch fails with each of them listed."""

    code = "invalid_input_file"

    def __init__(self, problems: list[LineProblem], total: int) -> None:
        first = problems[0]
        where = f"line {first.line}: " if first.line is not None else ""
        more = f" (and {total - 1} more)" if total > 1 else ""
        super().__init__(f"{where}{first.message}{more}", param="input_file_id")
        self.problems = problems
        self.total = total


def check_request(request: BatchRequest) -> None:
    """The checks that need no file contents; 400 naming the field."""
    if request.endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"endpoint {request.endpoint!r} cannot run in a batch; endpoints: "
            f"{', '.join(ENDPOINTS)}",
            param="endpoint",
        )
    if request.completion_window not in COMPLETION_WINDOWS:
        raise InvalidRequest(
            f"completion_window {request.completion_window!r} is not supported: "
            f"{', '.join(repr(w) for w in COMPLETION_WINDOWS)}",
            param="completion_window",
        )
    metadata = request.metadata
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS}", param="metadata"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidRequest("metadata maps strings to strings", param="metadata")
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"metadata keys are at most {MAX_METADATA_KEY_CHARS} characters and values at "
                f"most {MAX_METADATA_VALUE_CHARS}",
                param=f"metadata.{key[:MAX_METADATA_KEY_CHARS]}",
            )


def read_lines(handle: IO[bytes], *, endpoint: str) -> list[BatchLine]:
    """Every request of the file, checked; InvalidInputFile listing the problems (at most
    `MAX_LISTED_PROBLEMS`, all counted) when there is any."""
    lines: list[BatchLine] = []
    problems: list[LineProblem] = []
    count = 0

    def problem(found: LineProblem) -> None:
        nonlocal count
        count += 1
        if len(problems) < MAX_LISTED_PROBLEMS:
            problems.append(found)

    seen: set[str] = set()
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        if len(lines) + count >= MAX_REQUESTS:
            problem(
                LineProblem(
                    "too_many_requests",
                    f"a batch holds at most {MAX_REQUESTS} requests; split the file",
                    number,
                )
            )
            break
        parsed = _parse(raw, number, endpoint)
        if isinstance(parsed, LineProblem):
            problem(parsed)
            continue
        if parsed.custom_id in seen:
            problem(
                LineProblem(
                    "duplicate_custom_id",
                    f"custom_id {parsed.custom_id!r} is used by an earlier line; each request "
                    "needs its own",
                    number,
                    "custom_id",
                )
            )
            continue
        seen.add(parsed.custom_id)
        lines.append(parsed)
    if not lines and not count:
        problem(LineProblem("empty_file", "the file holds no requests: one JSON object a line"))
    if count:
        raise InvalidInputFile(problems, count)
    return lines


def _parse(raw: bytes, number: int, endpoint: str) -> BatchLine | LineProblem:
    try:
        value = json.loads(raw)
    except ValueError:  # bad JSON, or bytes that are not UTF-8
        return LineProblem(
            "invalid_json_line", "not a JSON object: each line holds one request", number
        )
    if not isinstance(value, dict):
        return LineProblem(
            "invalid_json_line", "not a JSON object: each line holds one request", number
        )
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineProblem(
            "missing_custom_id", "each request needs a custom_id string", number, "custom_id"
        )
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return LineProblem(
            "invalid_custom_id",
            f"custom_id is longer than {MAX_CUSTOM_ID_CHARS} characters",
            number,
            "custom_id",
        )
    method = value.get("method")
    if method != "POST":
        return LineProblem(
            "invalid_method", f"method is {method!r}; batches send POST", number, "method"
        )
    url = value.get("url")
    if url != endpoint:
        return LineProblem(
            "mismatched_url",
            f"url is {url!r}, but this batch's endpoint is {endpoint!r}: one endpoint a batch",
            number,
            "url",
        )
    body = value.get("body")
    if not isinstance(body, dict):
        return LineProblem("invalid_body", "body must be a JSON object", number, "body")
    if body.get("stream"):
        return LineProblem(
            "unsupported_value", "a batch cannot stream: leave out stream", number, "body.stream"
        )
    return BatchLine(number, custom_id, endpoint, body)


def problems_of(exc: InvalidInputFile) -> Iterable[dict[str, Any]]:
    return [problem.to_dict() for problem in exc.problems]
