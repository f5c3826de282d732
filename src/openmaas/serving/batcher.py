"""Dynamic batching for one loaded model: callers submit items, the model runs batches.

A batch closes when it reaches `max_batch_size` items or `max_batch_tokens` tokens, or when
`max_wait_ms` has passed since its *first* item was queued — whichever comes first. While a
batch executes (in a worker thread, off the event loop) the next one fills up, so under load
batches grow by themselves even with `max_wait_ms=0`.

After a batch, the callers it answered usually come back with their next request (a client
sends its next request when its last one returns). With `refill_wait_ms` set, the next batch
waits for them: until as many callers are queued as were answered plus already waiting, for
at most `refill_wait_ms` and at most `refill_share` of the last batch's execution time. A lone
client never waits (its one caller is back when its request arrives); 64 clients get batches
of 64 instead of two halves that run while the other half is being answered, which on a
machine whose cores the model and the HTTP layer share is both cheaper per item (bigger
batches) and faster (the model does not run against the event loop).

The queue is bounded: a full queue raises `Overloaded` (429 with Retry-After) at once instead
of letting callers wait without end. Callers that went away (their task was cancelled, e.g.
the client disconnected) are dropped before execution.

Background work (a batch job's lines: `submit_many(..., background=True)`) queues in a lane
of its own and yields to online callers: a batch is taken from the background lane only while
no online item is queued, and never mixes the two, so an online request waits at most for
the background batch already running. The lane is bounded by `max_queue` like the other.

One caller's input must not fail the others it shares a batch with: when a batch of several
callers raises, its items run again one at a time, once each, so every caller gets its own
result or its own error. The work stays bounded (at most twice a batch's items, never a
further split); a model that fails for everyone fails each caller with its own error. A
caller whose item failed has lost its request: its other items, in the batch or queued, are
not computed.

Example::

    batcher = Batcher(model.embed_list, BatchLimits(max_batch_size=32), executor=executor)
    batcher.start()
    vector = await batcher.submit("hello", tokens=3)
    await batcher.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from openmaas.errors import OpenMaaSError, Overloaded
from openmaas.observability.tracing import record_span, recording

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_batch_size: int = 32
    max_batch_tokens: int = 16_384  # sum of the items' tokens in one batch
    max_wait_ms: float = 0.0  # from the first queued item; 0 = run as soon as the model is free
    max_queue: int = 1024  # queued items before callers get 429
    refill_wait_ms: float = 0.0  # after a batch, longest wait for its callers to come back
    refill_share: float = 0.1  # ... and never longer than this share of the batch's run


class BatchObserver(Protocol):
    """Where a batcher reports what it does (the Prometheus metrics implement this)."""

    def queue_depth(self, depth: int) -> None: ...

    def batch_started(self, size: int, tokens: int, waits_s: Sequence[float]) -> None: ...

    def batch_finished(self, seconds: float, ok: bool) -> None: ...

    def batch_split(self, size: int) -> None:
        """A failed batch of `size` items from several callers is run again item by item."""


class _Quiet:
    def queue_depth(self, depth: int) -> None:
        pass

    def batch_started(self, size: int, tokens: int, waits_s: Sequence[float]) -> None:
        pass

    def batch_finished(self, seconds: float, ok: bool) -> None:
        pass

    def batch_split(self, size: int) -> None:
        pass


@dataclass(slots=True)
class _Run:
    """One execution of a batch, for the spans of the traced requests it served."""

    started: float
    size: int
    tokens: int
    finished: float = 0.0
    error: BaseException | None = None


@dataclass(slots=True)
class _Pending(Generic[In, Out]):
    item: In
    tokens: int
    future: asyncio.Future[Out]
    queued_at: float
    caller: int  # one per submit call: the items of one request share it
    background: bool = False
    runs: list[_Run] | None = None  # the runs that computed it; None: its request is untraced


@dataclass(frozen=True, slots=True)
class _Refill:
    """What the next batch waits for: `callers` distinct callers queued, until `deadline`."""

    callers: int
    deadline: float


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
        self._queue: deque[_Pending[In, Out]] = deque()  # online callers
        self._background: deque[_Pending[In, Out]] = deque()  # yields to `_queue`
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: list[_Pending[In, Out]] = []  # the batch being executed
        self._closed = False
        self._callers = itertools.count()

    @property
    def depth(self) -> int:
        return len(self._queue) + len(self._background)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"batcher:{self.name}"
            )

    async def close(self) -> None:
        """Stop the worker; callers still queued get an error rather than waiting forever."""
        self._closed = True
        stranded = [*self._running, *self._queue, *self._background]
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._queue.clear()
        self._background.clear()
        for pending in stranded:
            if not pending.future.done():
                pending.future.set_exception(Overloaded(f"{self.name} is shutting down; retry"))
        self._observer.queue_depth(0)

    async def submit(self, item: In, tokens: int = 1) -> Out:
        (result,) = await self.submit_many([item], [tokens])
        return result

    async def submit_many(
        self, items: Sequence[In], tokens: Sequence[int], *, background: bool = False
    ) -> list[Out]:
        """Results for one caller's items, in order. They queue together, all or none: a
        queue without room for them all answers 429, though an empty queue takes a caller with
        more items than the limit (the request size limit bounds those). They may run in more
        than one batch. `background` items wait while online ones are queued."""
        if self._closed:
            raise Overloaded(f"{self.name} is shutting down; retry")
        lane = self._background if background else self._queue
        if lane and len(lane) + len(items) > self.limits.max_queue:
            raise Overloaded(
                f"{self.name}: {len(lane)} items are queued and {len(items)} more would "
                f"pass the limit of {self.limits.max_queue}; retry shortly",
                retry_after_seconds=1,
            )
        if self._worker is None:
            self.start()
        loop = asyncio.get_running_loop()
        caller, now = next(self._callers), time.perf_counter()
        traced = recording()
        futures: list[asyncio.Future[Out]] = []
        pendings: list[_Pending[In, Out]] = []
        for item, count in zip(items, tokens, strict=True):
            future: asyncio.Future[Out] = loop.create_future()
            pending = _Pending(item, max(1, count), future, now, caller, background)
            if traced:
                pending.runs = []
                pendings.append(pending)
            lane.append(pending)
            futures.append(future)
        self._observer.queue_depth(self.depth)
        self._arrived.set()
        # If our caller is cancelled (client gone), its futures are cancelled with it and the
        # worker skips them; if one fails, the rest are not worth computing.
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            if traced:
                self._record_spans(now, pendings)

    def _record_spans(self, queued_at: float, pendings: list[_Pending[In, Out]]) -> None:
        """The request's queue wait (to its first batch) and each batch run that computed
        its items, as spans under the request's current span."""
        runs = {id(run): run for p in pendings for run in p.runs or ()}
        ordered = sorted(runs.values(), key=lambda run: run.started)
        if not ordered:
            return
        attributes = {"openmaas.batcher": self.name, "openmaas.items": len(pendings)}
        record_span("openmaas.queue_wait", queued_at, ordered[0].started, attributes)
        for run in ordered:
            record_span(
                "openmaas.batch_run",
                run.started,
                run.finished or time.perf_counter(),
                {
                    **attributes,
                    "openmaas.batch.size": run.size,
                    "openmaas.batch.tokens": run.tokens,
                },
                error=run.error,
            )

    async def _work(self) -> None:
        refill: _Refill | None = None
        while True:
            await self._wait_for_batch(refill)
            batch = self._take_batch()
            if batch:
                started = time.perf_counter()
                await self._execute(batch)
                refill = self._refill_after(batch, time.perf_counter() - started)

    async def _wait_for_batch(self, refill: _Refill | None) -> None:
        while not self._live(self._queue) and not self._live(self._background):
            self._arrived.clear()
            await self._arrived.wait()
        lane = self._lane()
        if lane is self._background:
            refill = None  # waiting for background callers to come back would only delay
        first_deadline = lane[0].queued_at + self.limits.max_wait_ms / 1000
        deadline = first_deadline if refill is None else max(first_deadline, refill.deadline)
        while not self._batch_full(lane):
            if lane is self._background and self._live(self._queue):
                return  # an online caller arrived: its batch goes first
            now = time.perf_counter()
            refilled = refill is None or self._queued_callers() >= refill.callers
            if now >= deadline or (now >= first_deadline and refilled):
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - now)
            except TimeoutError:
                return

    def _refill_after(self, batch: list[_Pending[In, Out]], seconds: float) -> _Refill | None:
        """The wait for the callers `batch` answered, who are likely to send again."""
        if self.limits.refill_wait_ms <= 0 or batch[0].background:
            return None
        queued = {p.caller for p in self._queue if not p.future.done()}
        answered = {p.caller for p in batch} - queued  # callers with items left are queued
        if len(answered) <= 1 and not queued:
            return None  # a lone caller: its next request starts a batch at once
        wait_s = min(self.limits.refill_wait_ms / 1000, self.limits.refill_share * seconds)
        return _Refill(len(queued) + len(answered), time.perf_counter() + wait_s)

    def _queued_callers(self) -> int:
        return len({p.caller for p in self._queue if not p.future.done()})

    @staticmethod
    def _live(lane: deque[_Pending[In, Out]]) -> bool:
        while lane and lane[0].future.done():
            lane.popleft()  # cancelled while waiting
        return bool(lane)

    def _lane(self) -> deque[_Pending[In, Out]]:
        """Where the next batch comes from: online callers first, background work when none
        is queued."""
        return self._queue if self._live(self._queue) else self._background

    def _batch_full(self, lane: deque[_Pending[In, Out]]) -> bool:
        count = tokens = 0
        for pending in lane:
            if pending.future.done():
                continue
            count += 1
            tokens += pending.tokens
            if count >= self.limits.max_batch_size or tokens >= self.limits.max_batch_tokens:
                return True
        return False

    def _take_batch(self) -> list[_Pending[In, Out]]:
        lane = self._lane()
        batch: list[_Pending[In, Out]] = []
        tokens = 0
        while lane and len(batch) < self.limits.max_batch_size:
            pending = lane[0]
            if pending.future.done():
                lane.popleft()
                continue
            if batch and tokens + pending.tokens > self.limits.max_batch_tokens:
                break
            batch.append(lane.popleft())
            tokens += pending.tokens
        self._observer.queue_depth(self.depth)
        return batch

    async def _execute(self, batch: list[_Pending[In, Out]]) -> None:
        self._running = batch
        try:
            try:
                results = await self._call(batch)
            except Exception as exc:
                if len({p.caller for p in batch}) == 1:
                    self._fail(batch[0].caller, exc)  # one request: no one else to spare
                else:
                    await self._one_by_one(batch)
                return
        finally:
            self._running = []
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _one_by_one(self, batch: list[_Pending[In, Out]]) -> None:
        """Each item of a failed batch alone, once: its caller gets its own result or error.
        No further retry, so a model that fails for everyone costs one run per item more."""
        self._observer.batch_split(len(batch))
        for pending in batch:
            if pending.future.done():
                continue  # cancelled, or another item of its request failed
            try:
                (result,) = await self._call([pending])
            except Exception as exc:
                self._fail(pending.caller, exc)
                continue
            if not pending.future.done():  # its caller may have gone while it ran
                pending.future.set_result(result)

    async def _call(self, batch: list[_Pending[In, Out]]) -> Sequence[Out]:
        """Run `batch` on the model's thread, reported to the observer; raises what it raised."""
        started = time.perf_counter()
        tokens = sum(p.tokens for p in batch)
        self._observer.batch_started(len(batch), tokens, [started - p.queued_at for p in batch])
        traced = [p.runs for p in batch if p.runs is not None]
        run = _Run(started, len(batch), tokens) if traced else None
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._run, [p.item for p in batch])
            if len(results) != len(batch):
                raise BatchFailed(
                    f"{self.name} returned {len(results)} results for {len(batch)} inputs"
                )
        except Exception as exc:
            self._observer.batch_finished(time.perf_counter() - started, ok=False)
            if run is not None:
                run.error = exc
            raise
        finally:
            if run is not None:
                run.finished = time.perf_counter()
                for runs in traced:
                    runs.append(run)
        self._observer.batch_finished(time.perf_counter() - started, ok=True)
        return results

    def _fail(self, caller: int, exc: Exception) -> None:
        """`caller`'s request failed: its items still running or queued are not worth
        computing (the request cannot succeed without them)."""
        for pending in [*self._running, *self._queue, *self._background]:
            if pending.caller == caller and not pending.future.done():
                pending.future.set_exception(exc)
