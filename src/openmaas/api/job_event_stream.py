"""A job's events as server-sent events (`text/event-stream`): what the console's training page
follows to grow its curves while a job runs, and what any `EventSource` or SSE client can read.

The stream sends, in order of the events' ids:
- each event as an unnamed SSE event (`id:` the event's id, `data:` the event as the events
  route lists it), so a client that reconnects sends `Last-Event-ID` and misses nothing;
- `event: job` with the job itself whenever its status, metrics or error change;
- `event: end` with the finished job once it is finished and every event is sent; then closes.
A comment line every KEEPALIVE_S keeps proxies from closing a quiet stream. A stream lasts at
most STREAM_MAX_S: then the server closes it and the client reconnects from the last id it saw
(an `EventSource` does so by itself), so a stopping server waits for no stream longer than that.

Example (in a route)::

    return await job_event_stream(services, principal, job_id, TRAINING_KINDS, training_job_out,
                                  after=after, last_event_id=request.headers.get("last-event-id"))
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from openmaas.api.convert.training import training_event_out
from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest
from openmaas.jobs.entities import FINISHED, Job
from openmaas.jobs.service import KindFilter
from openmaas.protocol.common import MAX_ROW_ID
from openmaas.wiring import Services

# The workers are other processes, maybe on other machines, and the shared database pushes
# nothing: the stream looks twice a second (a step of a small recipe takes about that long).
POLL_S = 0.5
KEEPALIVE_S = 15.0
STREAM_MAX_S = 30.0
PAGE = 500
# How long a browser waits before reconnecting a dropped stream (the SSE `retry:` field).
RETRY_MS = 2000


def _after(after: int | None, last_event_id: str | None) -> int | None:
    """Where to start: `after` when given, else the `Last-Event-ID` a reconnecting client sends."""
    if after is not None or last_event_id is None:
        return after
    if not last_event_id.isdigit() or int(last_event_id) > MAX_ROW_ID:
        raise InvalidRequest(
            "Last-Event-ID must be the id of an event this stream sent (a whole number)",
            param="Last-Event-ID",
        )
    return int(last_event_id)


def _frame(data: str, *, event: str | None = None, id: int | None = None) -> bytes:
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.append(f"data: {data}")  # the JSON is on one line: one data field
    return ("\n".join(lines) + "\n\n").encode()


async def job_event_stream(
    services: Services,
    principal: Principal,
    job_id: str,
    kind: KindFilter,
    job_out: Callable[[Job], BaseModel],
    *,
    after: int | None,
    last_event_id: str | None,
) -> StreamingResponse:
    """The stream of `job_id`'s events after `after` (or `Last-Event-ID`). A job the caller
    may not see answers 404 before anything is streamed."""
    start = _after(after, last_event_id)
    get = functools.partial(services.jobs.get, job_id, caller=principal, kind=kind)
    await run_in_threadpool(get)

    async def frames() -> AsyncIterator[bytes]:
        position = start
        shown: str | None = None
        opened_at = sent_at = time.monotonic()
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            # The job first: events written before it finished are then all in the page read
            # next, so `end` never comes before the job's last event.
            job = await run_in_threadpool(get)
            page = await run_in_threadpool(
                functools.partial(
                    services.jobs.events,
                    job_id,
                    caller=principal,
                    kind=kind,
                    after=position,
                    limit=PAGE,
                    order="asc",
                )
            )
            for event in page.items:
                yield _frame(training_event_out(event).model_dump_json(), id=event.id)
                position = event.id
                sent_at = time.monotonic()
            state = job_out(job).model_dump_json()
            if state != shown:
                shown = state
                yield _frame(state, event="job")
                sent_at = time.monotonic()
            if page.has_more:
                continue
            if job.status in FINISHED:
                yield _frame(state, event="end")
                return
            if time.monotonic() - opened_at >= STREAM_MAX_S:
                return  # the client reconnects with Last-Event-ID
            if time.monotonic() - sent_at >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                sent_at = time.monotonic()
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
