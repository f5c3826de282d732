"""Coalescing an API process's inference calls to one deployment: fewer, larger Ray calls.

Each call through a deployment handle costs CPU in three processes (this one, Serve's router,
the replica's core worker) whatever it carries. At 64 clients one sentence each, that cost
was most of what the Ray path lost against the embedded engine (`docs/benchmarks.md`). So
while `limit` calls are in flight to a deployment, requests that arrive wait here, and the
first call to return frees a slot for all of them as one call (up to `max_group`); the
replica runs each request as it would run it alone (its batcher batches them together).

A lone request never waits: with a slot free it goes at once, so one client's latency is
a plain call's. Each request keeps its own answer or error; a failed call (a replica that
died twice) fails every request it carried.

Example::

    calls = Coalescer(lambda group: handle.infer_many.remote(group), limit=2)
    answer = await calls.submit(request)
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class Coalescer(Generic[Request, Reply]):
    def __init__(
        self,
        send: Callable[[list[Request]], Awaitable[Sequence[Reply]]],
        *,
        limit: int,
        max_group: int,
    ) -> None:
        if limit < 1 or max_group < 1:
            raise ValueError(f"limit ({limit}) and max_group ({max_group}) must be at least 1")
        self._send = send
        self.limit = limit
        self.max_group = max_group
        self._waiting: deque[tuple[Request, asyncio.Future[Reply]]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls sent, for the figures of a benchmark or a test
        self.requests = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, request: Request) -> Reply:
        """The reply to `request`, sent alone if a slot is free, else with those waiting."""
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, reply))
        self._pump()
        return await reply  # a caller that goes away cancels only its own future

    def _pump(self) -> None:
        while self._waiting and len(self._in_flight) < self.limit:
            group: list[tuple[Request, asyncio.Future[Reply]]] = []
            while self._waiting and len(group) < self.max_group:
                request, reply = self._waiting.popleft()
                if not reply.done():  # its caller went away while it waited
                    group.append((request, reply))
            if not group:
                return
            task = asyncio.create_task(self._call(group))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._pump()

    async def _call(self, group: list[tuple[Request, asyncio.Future[Reply]]]) -> None:
        self.calls += 1
        self.requests += len(group)
        try:
            replies = await self._send([request for request, _ in group])
            if len(replies) != len(group):
                raise RuntimeError(f"{len(group)} requests got {len(replies)} replies")
        except BaseException as error:
            cancelled = isinstance(error, asyncio.CancelledError)
            for _, reply in group:
                if reply.done():
                    continue
                if cancelled:
                    reply.cancel()
                else:
                    reply.set_exception(error)
                    reply.exception()  # retrieved here: its caller may have gone
            if cancelled:
                raise
            return
        for (_, reply), answer in zip(group, replies, strict=True):
            if not reply.done():
                reply.set_result(answer)
