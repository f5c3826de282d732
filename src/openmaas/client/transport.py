"""The SDK's HTTP layer: send one request, retry what is worth retrying, turn every
failure into an `APIError`.

Retries follow the `openai` client's rules, so code that moves between the two sees the
same behaviour: up to `max_retries` more attempts (default 2) for `408`, `429` and every
`5xx` answer, and for a connection that failed or timed out. The server's `x-should-retry`
header overrides the status (`true` retries even a 4xx, `false` never retries: an exhausted
quota says so). The wait is the server's `Retry-After` (`retry-after-ms`, seconds, or an
HTTP date) when it is positive and at most `MAX_RETRY_AFTER_S`; an answer that asks for a
longer wait is not retried at all (a quota that resets in hours is not slept through);
otherwise it is exponential backoff from `INITIAL_RETRY_DELAY_S`, capped at
`MAX_RETRY_DELAY_S`, less up to 25% of random jitter. Like the `openai` client this retries
POSTs too: every route that answers 429 or 503 refused the request before changing
anything (rate limits, a full queue, a model that failed to load). `409 Conflict` is not
retried, unlike `openai`'s: here it means the request conflicts with the state (an alias in
use, a finished job), which a retry cannot change. An upload is sent again from the start of
its file, though not after its connection broke (the server's size limit cuts one off; a
second try would fail the same way); a body that cannot be rewound is never sent twice.

Example::

    with httpx.Client(base_url="http://127.0.0.1:8000") as http:
        try:
            send(http, "GET", "/v1/registry/models/bert", max_retries=2)
        except APIError as exc:
            print(exc.status_code, exc.code, exc.request_id)  # 404 model_not_found ...
"""

from __future__ import annotations

import email.utils
import io
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

import httpx

log = logging.getLogger("openmaas.client")

DEFAULT_MAX_RETRIES = 2  # the openai client's default
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 120.0  # a longer Retry-After is not waited for: the error is raised
RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx


class APIError(Exception):
    """A request the server refused or failed (any non-2xx answer).

    Carries the fields of the server's `{"error": {...}}` body and the request id to quote
    when reporting a problem::

        try:
            client.resolve("bert@production")
        except APIError as exc:
            if exc.code == "alias_not_found":
                ...
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        type: str | None = None,  # the field of the error body
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.type = type
        self.param = param
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIError:
        request_id = response.headers.get("x-request-id")
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            # Not our error shape (a proxy page, a crash before the app): keep what there is.
            text = " ".join(response.text.split())[:300] or response.reason_phrase
            return cls(
                f"HTTP {response.status_code} from {response.request.url}: {text}",
                status_code=response.status_code,
                request_id=request_id,
            )
        return cls(
            str(error.get("message") or f"HTTP {response.status_code}"),
            status_code=response.status_code,
            code=_optional_str(error.get("code")),
            type=_optional_str(error.get("type")),
            param=_optional_str(error.get("param")),
            request_id=request_id,
        )


class ConnectionFailed(APIError):
    """No answer from the server: it is not running, unreachable, or too slow to answer."""


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait the server asked for, in seconds: `retry-after-ms`, then `retry-after` as
    seconds or as an HTTP date; None when neither is there or readable."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": GMT, as every HTTP date is
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() - (time.time() if now is None else now)


def should_retry(response: httpx.Response) -> bool:
    """Whether an answer is worth another attempt (see the module's docstring)."""
    wait = retry_after_s(response.headers)
    if wait is not None and wait > MAX_RETRY_AFTER_S:
        return False
    verdict = str(response.headers.get("x-should-retry", "")).strip().lower()
    if verdict in ("true", "false"):
        return verdict == "true"
    return response.status_code in RETRIED_STATUSES or response.status_code >= 500


def retry_delay_s(
    retries_done: int,
    headers: Mapping[str, str] | None = None,
    *,
    jitter: Callable[[], float] = random.random,
) -> float:
    """How long to wait before retry number `retries_done + 1`: the server's Retry-After
    when it is positive and at most `MAX_RETRY_AFTER_S`, else exponential backoff with up
    to 25% taken off at random (so many clients do not retry in step)."""
    wait = retry_after_s(headers) if headers is not None else None
    if wait is not None and 0 < wait <= MAX_RETRY_AFTER_S:
        return wait
    backoff = min(INITIAL_RETRY_DELAY_S * 2.0 ** min(retries_done, 64), MAX_RETRY_DELAY_S)
    return max(0.0, backoff * (1.0 - 0.25 * jitter()))


def send(
    http: httpx.Client,
    method: str,
    path: str,
    *,
    upload: bool = False,
    max_retries: int = DEFAULT_MAX_RETRIES,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request, retried up to `max_retries` times as the module's docstring says;
    any non-2xx answer or transport failure that remains raises `APIError`.

    `upload` adds a hint to broken connections: a server may drop an oversized upload.
    """
    retries_left = max_retries if _replayable(kwargs) else 0
    while True:
        try:
            response = _send_once(http, method, path, upload=upload, **kwargs)
        except ConnectionFailed as exc:
            # An upload whose connection broke was most likely cut off by the server's size
            # limit: sending it again would only cost the whole upload again.
            broke_mid_upload = upload and not isinstance(exc.__cause__, httpx.ConnectError)
            if retries_left <= 0 or broke_mid_upload:
                raise
            delay = retry_delay_s(max_retries - retries_left)
            log.info("%s %s: no connection; retrying in %.2f s", method, path, delay)
        else:
            if response.is_success:
                return response
            if retries_left <= 0 or not should_retry(response):
                raise APIError.from_response(response)
            delay = retry_delay_s(max_retries - retries_left, response.headers)
            log.info(
                "%s %s: HTTP %d; retrying in %.2f s", method, path, response.status_code, delay
            )
            response.close()
        retries_left -= 1
        time.sleep(delay)


def _replayable(kwargs: Mapping[str, Any]) -> bool:
    """Whether the request's body can be sent again: in memory, or files that rewind (httpx
    seeks each file to its start when it builds a body)."""
    content = kwargs.get("content")
    if content is not None and not isinstance(content, str | bytes):
        return False
    files = kwargs.get("files") or {}
    entries = files.values() if isinstance(files, Mapping) else [value for _, value in files]
    for entry in entries:
        handle = entry[1] if isinstance(entry, tuple) else entry
        if isinstance(handle, str | bytes):
            continue
        if isinstance(handle, io.IOBase) and not handle.seekable():
            return False
        if not hasattr(handle, "seek"):
            return False
    return True


def _send_once(
    http: httpx.Client, method: str, path: str, *, upload: bool, **kwargs: Any
) -> httpx.Response:
    base_url = str(http.base_url).rstrip("/")
    url = f"{base_url}{path}"
    try:
        return http.request(method, path, **kwargs)
    except httpx.ConnectError as exc:
        raise ConnectionFailed(
            f"could not connect to {base_url} ({exc}); the OpenMaaS server may not "
            "be running there (start it with `openmaas serve`, or pass the right URL)"
        ) from exc
    except httpx.TimeoutException as exc:
        raise ConnectionFailed(
            f"{method} {url} got no answer in time ({type(exc).__name__}); the server may "
            "be overloaded, or raise the client's timeout"
        ) from exc
    except httpx.TransportError as exc:
        hint = (
            "; the archive may exceed the server's upload limit (OPENMAAS_MAX_UPLOAD_MB)"
            if upload
            else ""
        )
        raise ConnectionFailed(
            f"{method} {url} failed: the connection broke ({type(exc).__name__}: {exc}){hint}"
        ) from exc
