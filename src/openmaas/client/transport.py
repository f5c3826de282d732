"""The SDK's HTTP layer: send one request, turn every failure into an `APIError`.

Example::

    with httpx.Client(base_url="http://127.0.0.1:8000") as http:
        try:
            send(http, "GET", "/v1/registry/models/bert")
        except APIError as exc:
            print(exc.status_code, exc.code, exc.request_id)  # 404 model_not_found ...
"""

from __future__ import annotations

from typing import Any

import httpx


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


def send(
    http: httpx.Client, method: str, path: str, *, upload: bool = False, **kwargs: Any
) -> httpx.Response:
    """Send one request; any non-2xx answer or transport failure raises `APIError`.

    `upload` adds a hint to broken connections: a server may drop an oversized upload.
    """
    base_url = str(http.base_url).rstrip("/")
    url = f"{base_url}{path}"
    try:
        response = http.request(method, path, **kwargs)
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
    if response.is_success:
        return response
    raise APIError.from_response(response)
