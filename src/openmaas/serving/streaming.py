"""Run a blocking iterator (token-by-token generation) in a model's worker thread and consume
it from the event loop without blocking it. Closing the async iterator (the client went away)
stops the thread at its next item."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")

_END = object()


async def iterate_in_thread(
    executor: Executor, make_iterator: Callable[[], Iterator[T]]
) -> AsyncGenerator[T, None]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
    stop = threading.Event()

    def pump() -> None:
        try:
            for item in make_iterator():
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, (item, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, (_END, exc))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, (_END, None))

    done = loop.run_in_executor(executor, pump)
    try:
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        if done.done():
            done.result()
