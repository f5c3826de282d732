"""A batch's requests, run through this server's own app in-process.

The batch runner (`batches/`) hands each line here, from its worker thread; the line runs
on the server's event loop through the whole ASGI app: request id, metrics, metering, the
authentication middleware (as the batch's creator: its rate limits and scope guards), the
body limit, the route's own validation, the engine. So a line is answered, limited,
metered and counted exactly like the same request sent online, by the one code path that
serves online requests, with no copy of any route's logic and no socket: the app is called
as an ASGI callable, the way a server calls it. The task running a line is marked as
background work (`serving.priority`), so the engine queues its items behind online ones.

Example::

    dispatch = InProcessDispatch(app, asyncio.get_running_loop())
    future = dispatch.submit("/v1/embeddings", {"model": "m", "input": "hi"},
                             caller=principal, request_id="batch_req_1")
    future.result().status_code  # 200, from a worker thread
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from starlette.types import ASGIApp, Message

from openmaas.api.authentication import IN_PROCESS_CALLER
from openmaas.auth.entities import Principal
from openmaas.batches.entities import LineAnswer
from openmaas.serving.priority import background_work


class InProcessDispatch:
    """Runs one request through `app` on `loop` (see the module's docstring)."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    def submit(
        self, url: str, body: Mapping[str, Any], *, caller: Principal, request_id: str
    ) -> Future[LineAnswer]:
        """Thread-safe: the request runs on the server's loop; the future has its answer."""
        return asyncio.run_coroutine_threadsafe(
            self.call(url, body, caller=caller, request_id=request_id), self.loop
        )

    async def call(
        self, url: str, body: Mapping[str, Any], *, caller: Principal, request_id: str
    ) -> LineAnswer:
        payload = json.dumps(body).encode()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": url,
            "raw_path": url.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
            "client": None,
            "server": None,
            "state": {},
            IN_PROCESS_CALLER: caller,
        }
        answered = asyncio.Event()
        sent_body = False
        status = 500
        headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": payload, "more_body": False}
            # Nobody goes away: the "client" waits for the whole answer.
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    headers[name.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    answered.set()

        token = background_work.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            background_work.reset(token)
            answered.set()
        raw = b"".join(chunks)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = {"text": raw.decode("utf-8", "replace")}
        return LineAnswer(
            status_code=status,
            body=parsed,
            request_id=headers.get("x-request-id"),
            headers=headers,
        )
