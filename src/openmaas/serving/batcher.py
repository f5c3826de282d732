"""Dynamic batching for one loaded model: callers submit single items, the model runs batches.

A batch closes when it reaches `max_batch_size` items or `max_batch_tokens` tokens, or when
`max_wait_ms` has passed since its *first* item was queued — whichever comes first. While a
batch executes (in a worker thread, off the event loop) the next one fills up, so under load
batches grow by themselves even with `max_wait_ms=0`. The queue is bounded: a full queue
raises `Overloaded` (429 with Retry-After) at once instead of letting callers wait without
end. Callers that went away (their task was cancelled, e.g. the client disconnected) are
dropped before execution; when a batch fails, every caller in it gets the error.

Example::

    batcher = Batcher(model.embed_list, BatchLimits(max_batch_size=32), executor=executor)
    batcher.start()
    vector = await batcher.submit("hello", tokens=3)
    await batcher.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from openmaas.errors import OpenMaaSError, Overloaded

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_batch_size: int = 32
    max_batch_tokens: int = 16_384  # sum of the items' tokens in one batch
    max_wait_ms: float = 0.0  # from the first queued item; 0 = run as soon as the model is free
    max_queue: int = 1024  # queued items before callers get 429


class BatchObserver(Protocol):
    """Where a batcher reports what it does (the Prometheus metrics implement this)."""

    def queue_depth(self, depth: int) -> None: ...

    def batch_started(self, size: int, tokens: int, waits_s: Sequence[float]) -> None: ...

    def batch_finished(self, seconds: float, ok: bool) -> None: ...


class _Quiet:
    def queue_depth(self, depth: int) -> None:
        pass

    def batch_started(self, size: int, tokens: int, waits_s: Sequence[float]) -> None:
        pass

    def batch_finished(self, seconds: float, ok: bool) -> None:
        pass


@dataclass(slots=True)
class _Pending(Generic[In, Out]):
    item: In
    tokens: int
    future: asyncio.Future[Out]
    queued_at: float


class BatchFailed(OpenMaaSError):
    """The batch function broke its contract (wrong number of results)."""


class Batcher(Generic[In, Out]):
    """Collects items into batches for `run(items) -> results` (same length, same order)."""

    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out]],
        limits: BatchLimits,
        *,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        name: str = "batcher",
    ) -> None:
        self._run = run
        self.limits = limits
        self._executor = executor
        self._observer: BatchObserver = observer or _Quiet()
        self.name = name
        self._queue: deque[_Pending[In, Out]] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: list[_Pending[In, Out]] = []  # the batch being executed
        self._closed = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"batcher:{self.name}"
            )

    async def close(self) -> None:
        """Stop the worker; callers still queued get an error rather than waiting forever."""
        self._closed = True
        stranded = [*self._running, *self._queue]
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._queue.clear()
        for pending in stranded:
            if not pending.future.done():
                pending.future.set_exception(Overloaded(f"{self.name} is shutting down; retry"))
        self._observer.queue_depth(0)

    async def submit(self, item: In, tokens: int = 1) -> Out:
        if self._closed:
            raise Overloaded(f"{self.name} is shutting down; retry")
        if len(self._queue) >= self.limits.max_queue:
            raise Overloaded(
                f"{self.name}: {len(self._queue)} requests are queued (the limit); retry shortly",
                retry_after_seconds=1,
            )
        if self._worker is None:
            self.start()
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, max(1, tokens), future, time.perf_counter()))
        self._observer.queue_depth(len(self._queue))
        self._arrived.set()
        # If our caller is cancelled (client gone), the future is cancelled with it and the
        # worker skips the item.
        return await future

    async def _work(self) -> None:
        while True:
            await self._wait_for_batch()
            batch = self._take_batch()
            if batch:
                await self._execute(batch)

    async def _wait_for_batch(self) -> None:
        while not self._live_queue():
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._queue[0].queued_at + self.limits.max_wait_ms / 1000
        while not self._batch_full():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _live_queue(self) -> bool:
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()  # cancelled while waiting
        return bool(self._queue)

    def _batch_full(self) -> bool:
        count = tokens = 0
        for pending in self._queue:
            if pending.future.done():
                continue
            count += 1
            tokens += pending.tokens
            if count >= self.limits.max_batch_size or tokens >= self.limits.max_batch_tokens:
                return True
        return False

    def _take_batch(self) -> list[_Pending[In, Out]]:
        batch: list[_Pending[In, Out]] = []
        tokens = 0
        while self._queue and len(batch) < self.limits.max_batch_size:
            pending = self._queue[0]
            if pending.future.done():
                self._queue.popleft()
                continue
            if batch and tokens + pending.tokens > self.limits.max_batch_tokens:
                break
            batch.append(self._queue.popleft())
            tokens += pending.tokens
        self._observer.queue_depth(len(self._queue))
        return batch

    async def _execute(self, batch: list[_Pending[In, Out]]) -> None:
        started = time.perf_counter()
        self._observer.batch_started(
            len(batch), sum(p.tokens for p in batch), [started - p.queued_at for p in batch]
        )
        items = [p.item for p in batch]
        loop = asyncio.get_running_loop()
        self._running = batch
        try:
            results = await loop.run_in_executor(self._executor, self._run, items)
            if len(results) != len(batch):
                raise BatchFailed(
                    f"{self.name} returned {len(results)} results for {len(batch)} inputs"
                )
        except Exception as exc:  # every caller in the batch gets the same error
            self._observer.batch_finished(time.perf_counter() - started, ok=False)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            self._running = []
        self._observer.batch_finished(time.perf_counter() - started, ok=True)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
