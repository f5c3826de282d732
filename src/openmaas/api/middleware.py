"""ASGI middleware: request ids, request body size limits, metrics, cancel on disconnect."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.errors import PayloadTooLarge
from openmaas.observability.logs import request_id_var
from openmaas.observability.metrics import Metrics
from openmaas.serving.rollout import Routing, routing_var

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")  # fullmatch: no trailing newline


class RequestIds:
    """Random ids shaped like `uuid4().hex` (32 hex digits), drawn from a generator seeded
    once from the OS. `uuid4` reads the OS's random source on every call: a system call
    that also hands the GIL to the model's thread and back. Ids need to be unique, not
    secret."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))  # noqa: S311 - not a secret

    def new(self) -> str:
        return f"{self._random.getrandbits(128):032x}"


class RequestIdMiddleware:
    """Gives every request an id (the caller's `X-Request-Id` if sane) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id").decode("latin-1")
        request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else self.ids.new()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        # The request's traffic-split choices (one per split), and its headers for sticky ones.
        routing = routing_var.set(Routing(scope["headers"]))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            routing_var.reset(routing)
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413, whether announced by Content-Length or streamed.

    Routes in `routes` (by path template, e.g. `/v1/files`, as `template_of` finds a request's
    route) get their own limit, every other request `limit`. The large upload limits apply to
    the routes named there and nowhere else: a suffix rule (any path ending in `/upload`)
    gave them to routes that take JSON.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        routes: dict[str, int] | None = None,
        template_of: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.routes = dict(routes or {})
        self.template_of = template_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        template = self.template_of(scope) if self.template_of and self.routes else None
        limit = self.routes.get(template, self.limit) if template else self.limit
        declared = _header(scope, b"content-length")
        # Any digits, not just those `parse_decimal` bounds: a huge length is still too large.
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            await _send_too_large(send, limit, path)
            return
        received = 0
        started = False  # the app has started its response
        refused = False  # we answered 413 in its place

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if started:
                        raise PayloadTooLarge(_too_large_message(limit))
                    if not refused:
                        # Answered here: raised into the app, the error met FastAPI's body
                        # parsing, which turns any failure into a 400 (a chunked body over
                        # the limit answered 400 in the audit).
                        refused = True
                        await _send_too_large(send, limit, path)
                    # The app stops reading as if the client had gone; what it answers then
                    # is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


def _header(scope: Scope, name: bytes) -> bytes:
    """The last value of header `name` (lowercase), b"" when absent: what `dict(headers)`
    gives, without building a dict on every request."""
    for key, value in reversed(scope["headers"]):
        if key == name:
            return bytes(value)
    return b""


def _too_large_message(limit: int) -> str:
    return (
        f"request body is larger than the {limit // (1024 * 1024)} MiB this route accepts "
        "(uploads: OPENMAAS_MAX_UPLOAD_MB, audio: OPENMAAS_MAX_AUDIO_MB)"
    )


async def _send_too_large(send: Send, limit: int, path: str) -> None:
    error = PayloadTooLarge(_too_large_message(limit))
    # Open Inference Protocol clients read {"error": "<message>"} (see api.errors).
    shape = {"error": error.message} if path.startswith("/v2") else error.to_dict()
    body = json.dumps(shape).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Counts requests and times them by model, route template and status class.

    The route label is the matched path template (`/v1/models/{model_id}`), never the raw
    path, so label cardinality stays bounded; routes label the model via `request.state.model`.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # `labels()` validates, sorts and locks on every call; the label sets are few.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 499  # no response sent: the client closed the request (nginx's convention)

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            model = str(scope.get("state", {}).get("model", ""))
            key = (model, template, status // 100)
            series = self._series.get(key)
            if series is None:
                series = (
                    self.metrics.requests.labels(
                        model=model, route=template, status=f"{status // 100}xx"
                    ),
                    self.metrics.request_seconds.labels(model=model, route=template),
                )
                self._series[key] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)


class CancelOnDisconnectMiddleware:
    """Cancels a request's handler when its client disconnects before the response starts.

    Servers keep running a handler whose client has gone; for inference that wastes a batch
    slot. Once the handler has read the whole body, this reads the connection on its behalf:
    an `http.disconnect` before the response has started cancels the handler (its queued batch
    items are then dropped). After the response has started, disconnects are left to the
    response itself (a streaming response stops on its own).

    The handler runs in the server's own task (cancelled, then un-cancelled, on a disconnect):
    one extra task per request, the watcher, and only once the body has been read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        connection = _WatchedConnection(task, receive, send)
        try:
            await self.app(scope, connection.receive, connection.send)
        except asyncio.CancelledError:
            if not connection.cancelled_handler:
                raise
            connection.cancelled_handler = False
            if task.uncancel() > 0:  # cancelled for another reason too (server shutdown)
                raise
            # The client is gone: nothing to send, nobody to tell.
        finally:
            connection.close()
            if connection.cancelled_handler:  # the app swallowed our cancellation
                task.uncancel()


class _WatchedConnection:
    """One request's receive/send as the handler sees them, with the disconnect watcher."""

    __slots__ = ("_inbox", "_receive", "_send", "_task", "_watcher", "cancelled_handler", "started")

    def __init__(self, task: asyncio.Task[Any], receive: Receive, send: Send) -> None:
        self._task = task
        self._receive = receive
        self._send = send
        self._watcher: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] | None = None  # what the watcher read, for the app
        self.started = False  # the response has started
        self.cancelled_handler = False

    async def receive(self) -> Message:
        if self._watcher is not None:  # the body is read: the watcher owns the connection
            return await self._messages().get()
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    def _messages(self) -> asyncio.Queue[Message]:
        if self._inbox is None:
            self._inbox = asyncio.Queue()
        return self._inbox

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            self._messages().put_nowait(message)
            if message["type"] == "http.disconnect":
                if not self.started:
                    self.cancelled_handler = True
                    self._task.cancel()
                return
