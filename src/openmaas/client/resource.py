"""What every resource's calls share: one HTTP client, typed answers, safe path segments.

Each resource module (`models`, `aliases`, `admin`, ...) is a `Resource` subclass holding that
resource's methods; `Client` inherits them all, so the SDK stays one object to the caller.

Example::

    class ThingsResource(Resource):
        def get_thing(self, name: str) -> ThingOut:
            return self._one("GET", f"/v1/things/{segment(name)}", ThingOut)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from openmaas.client.transport import DEFAULT_MAX_RETRIES, send
from openmaas.protocol.common import ListOut

M = TypeVar("M", bound=BaseModel)


class Resource:
    """Request plumbing over the `httpx.Client` the concrete `Client` creates."""

    _http: httpx.Client
    max_retries: int = DEFAULT_MAX_RETRIES

    def _one(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        return model.model_validate(self._request(method, path, **kwargs).json())

    def _list(self, method: str, path: str, model: type[M], **kwargs: Any) -> list[M]:
        page = ListOut[Any].model_validate(self._request(method, path, **kwargs).json())
        return [model.model_validate(item) for item in page.data]

    def _request(
        self, method: str, path: str, *, upload: bool = False, **kwargs: Any
    ) -> httpx.Response:
        return send(self._http, method, path, upload=upload, max_retries=self.max_retries, **kwargs)


def segment(value: str | int) -> str:
    # Names travel in the path: escape everything, so "a/b" stays one segment, and spell
    # out dot segments, which URL normalisation would otherwise resolve away.
    text = str(value)
    if text in (".", ".."):
        return text.replace(".", "%2E")
    return quote(text, safe="")


Polled = TypeVar("Polled")


def wait_until(
    fetch: Callable[[], Polled],
    finished: Callable[[Polled], bool],
    describe: Callable[[Polled], str],
    *,
    poll_s: float,
    timeout_s: float | None,
) -> Polled:
    """`fetch()` every `poll_s` until `finished` says so; TimeoutError (naming `describe` of
    the last state) past `timeout_s`. The waits of jobs, optimization jobs and batches."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = fetch()
        if finished(state):
            return state
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{describe(state)} after {timeout_s} s")
        time.sleep(poll_s)
