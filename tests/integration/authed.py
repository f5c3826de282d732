"""httpx calls that carry the test servers' admin key (conftest.ADMIN_KEY).

Tests of authentication itself build their headers explicitly instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.integration.conftest import ADMIN_KEY

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
# httpx's default is 5 s: a registration that estimates a model's memory imports torch in the
# server the first time, seconds on a busy 2-core machine. Tests about hangs pass their own.
TIMEOUT_S = 60.0


def _headers(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        "timeout": TIMEOUT_S,
        **kwargs,
        "headers": {**AUTH, **(kwargs.get("headers") or {})},
    }


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, **_headers(kwargs))


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, **_headers(kwargs))


def put(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.put(url, **_headers(kwargs))


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.delete(url, **_headers(kwargs))


@contextmanager
def stream(method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
    with httpx.stream(method, url, **_headers(kwargs)) as response:
        yield response
