"""ASGI middleware on tiny inline apps: cancel on disconnect."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from openmaas.api.middleware import CancelOnDisconnectMiddleware

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []}


class Connection:
    """The server side of one connection: messages the app will receive, and what it sent."""

    def __init__(self, *messages: Message) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        for message in messages:
            self.incoming.put_nowait(message)
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)


@pytest.mark.asyncio
async def test_handler_is_cancelled_when_client_leaves_before_the_response() -> None:
    waiting = asyncio.Event()
    outcome: list[str] = []

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await receive()
        assert body["body"] == b"{}"
        waiting.set()
        try:
            await asyncio.Event().wait()  # a batch that would never come back in time
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    connection = Connection({"type": "http.request", "body": b"{}", "more_body": False})
    serving = asyncio.ensure_future(
        CancelOnDisconnectMiddleware(slow_app)(SCOPE, connection.receive, connection.send)
    )
    await waiting.wait()
    connection.incoming.put_nowait({"type": "http.disconnect"})
    await serving  # returns quietly: nobody is left to answer
    assert outcome == ["cancelled"]
    assert connection.sent == []


@pytest.mark.asyncio
async def test_started_response_sees_the_disconnect_itself() -> None:
    async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        message = await receive()  # what StreamingResponse does to notice a disconnect
        assert message["type"] == "http.disconnect"

    connection = Connection(
        {"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}
    )
    await CancelOnDisconnectMiddleware(streaming_app)(SCOPE, connection.receive, connection.send)
    assert connection.sent[0]["status"] == 200


@pytest.mark.asyncio
async def test_normal_request_completes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        chunks = [await receive(), await receive()]
        assert [c["body"] for c in chunks] == [b"ab", b"cd"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    connection = Connection(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    )
    await CancelOnDisconnectMiddleware(app)(SCOPE, connection.receive, connection.send)
    assert [m["type"] for m in connection.sent] == ["http.response.start", "http.response.body"]
