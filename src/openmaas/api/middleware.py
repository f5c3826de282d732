"""ASGI middleware: request ids and request body size limits."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.errors import PayloadTooLarge
from openmaas.observability.logs import request_id_var
from openmaas.observability.metrics import Metrics

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestIdMiddleware:
    """Gives every request an id (the caller's `X-Request-Id` if sane) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413, whether announced by Content-Length or streamed.

    Upload routes (paths ending in `/upload`) get `upload_limit`, paths in `limits` their own
    limit, every other route `limit`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        upload_limit: int,
        limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.upload_limit if path.endswith("/upload") else self.limits.get(path, self.limit)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_too_large(send, limit, path)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(_too_large_message(limit))
            return message

        await self.app(scope, counting_receive, send)


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
            self.metrics.requests.labels(
                model=model, route=template, status=f"{status // 100}xx"
            ).inc()
            self.metrics.request_seconds.labels(model=model, route=template).observe(
                time.perf_counter() - started
            )


class CancelOnDisconnectMiddleware:
    """Cancels a request's handler when its client disconnects before the response starts.

    Servers keep running a handler whose client has gone; for inference that wastes a batch
    slot. Once the handler has read the whole body, this reads the connection on its behalf:
    an `http.disconnect` before the response has started cancels the handler (its queued batch
    items are then dropped). After the response has started, disconnects are left to the
    response itself (a streaming response stops on its own).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        body_done = asyncio.Event()
        started = False

        async def relayed_receive() -> Message:
            if body_done.is_set():
                return await inbox.get()
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done.set()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, relayed_receive, tracking_send))

        async def watch() -> None:
            await body_done.wait()
            while True:
                message = await receive()
                await inbox.put(message)
                if message["type"] == "http.disconnect":
                    if not started:
                        handler.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not handler.cancelled() or started:
                raise
            # The client is gone: nothing to send, nobody to tell.
        finally:
            watcher.cancel()
