"""The batcher, gated on asyncio events and thread events: no sleeps decide an outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from openmaas.errors import Overloaded
from openmaas.serving.batcher import Batcher, BatchLimits
from tests.loop_turns import until

LONG_WAIT_MS = 60_000.0  # a wait no test reaches: batches must close for another reason


class Recorder:
    """A batch function that records its batches and can be held at a gate."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        self.batches.append(list(items))
        return [item.upper() for item in items]


async def _wait_thread_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


@pytest.mark.asyncio
async def test_batch_closes_at_max_size_without_waiting(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = Batcher(
        run, BatchLimits(max_batch_size=4, max_wait_ms=LONG_WAIT_MS), executor=executor
    )
    results = await asyncio.gather(*(batcher.submit(f"t{i}") for i in range(4)))
    assert results == ["T0", "T1", "T2", "T3"]
    assert run.batches == [["t0", "t1", "t2", "t3"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_batch_closes_at_token_budget(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    limits = BatchLimits(max_batch_size=100, max_batch_tokens=10, max_wait_ms=LONG_WAIT_MS)
    batcher = Batcher(run, limits, executor=executor)
    # 4 + 4 fit in 10 tokens; the third item would make 12, so it starts the next batch,
    # which is completed by the fourth (6 + 4 = 10).
    tasks = [
        asyncio.ensure_future(batcher.submit(f"t{i}", tokens))
        for i, tokens in enumerate([4, 4, 6, 4])
    ]
    await asyncio.gather(*tasks)
    assert run.batches == [["t0", "t1"], ["t2", "t3"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_max_wait_counts_from_first_item(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = Batcher(run, BatchLimits(max_batch_size=8, max_wait_ms=50), executor=executor)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.ensure_future(batcher.submit("a"))
    await until(lambda: batcher.depth == 1)
    second = asyncio.ensure_future(batcher.submit("b"))
    assert list(await asyncio.gather(first, second)) == ["A", "B"]
    # Both went in one batch that closed on the wait, not on size.
    assert run.batches == [["a", "b"]]
    assert loop.time() - started >= 0.05
    await batcher.close()


@pytest.mark.asyncio
async def test_zero_wait_runs_at_once_and_batches_form_while_busy(
    executor: ThreadPoolExecutor,
) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, BatchLimits(max_batch_size=8, max_wait_ms=0), executor=executor)
    first = asyncio.ensure_future(batcher.submit("a"))
    await _wait_thread_event(run.entered)  # the first item runs alone, without waiting
    rest = [asyncio.ensure_future(batcher.submit(x)) for x in "bcd"]
    await until(lambda: batcher.depth == 3)
    gate.set()
    assert await first == "A"
    assert await asyncio.gather(*rest) == ["B", "C", "D"]
    assert run.batches == [["a"], ["b", "c", "d"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_cancelled_callers_are_dropped_before_execution(
    executor: ThreadPoolExecutor,
) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, BatchLimits(max_batch_size=8), executor=executor)
    busy = asyncio.ensure_future(batcher.submit("busy"))
    await _wait_thread_event(run.entered)
    keep = asyncio.ensure_future(batcher.submit("keep"))
    gone = asyncio.ensure_future(batcher.submit("gone"))
    await until(lambda: batcher.depth == 2)
    gone.cancel()  # the client disconnected
    gate.set()
    assert await busy == "BUSY"
    assert await keep == "KEEP"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert run.batches == [["busy"], ["keep"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_a_model_that_fails_for_everyone_fails_each_caller_once_more(
    executor: ThreadPoolExecutor,
) -> None:
    calls: list[list[str]] = []

    def explode(items: list[str]) -> Sequence[str]:
        calls.append(list(items))
        raise RuntimeError(f"broken batch of {len(items)}")

    batcher = Batcher(
        explode, BatchLimits(max_batch_size=3, max_wait_ms=LONG_WAIT_MS), executor=executor
    )
    outcomes = await asyncio.gather(*(batcher.submit(x) for x in "abc"), return_exceptions=True)
    # Each caller gets the error of its own item; each item ran once more, alone, no more.
    assert [str(o) for o in outcomes] == ["broken batch of 1"] * 3
    assert calls == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    # The batcher survives a failed batch.
    ok = Batcher(Recorder(), BatchLimits(max_batch_size=1), executor=executor)
    assert await ok.submit("x") == "X"
    await batcher.close()
    await ok.close()


@pytest.mark.asyncio
async def test_wrong_result_count_is_an_error(executor: ThreadPoolExecutor) -> None:
    batcher: Batcher[str, str] = Batcher(
        lambda items: items[1:],
        BatchLimits(max_batch_size=2, max_wait_ms=LONG_WAIT_MS),
        executor=executor,
    )
    outcomes = await asyncio.gather(
        batcher.submit("a"), batcher.submit("b"), return_exceptions=True
    )
    assert [str(o) for o in outcomes] == ["batcher returned 0 results for 1 inputs"] * 2
    await batcher.close()


class Poisoned:
    """A batch function that raises for any batch holding "poison", and counts splits."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.splits: list[int] = []

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        if "poison" in items:
            raise ValueError("cannot digest poison")
        return [item.upper() for item in items]

    # -- BatchObserver
    def queue_depth(self, depth: int) -> None:
        pass

    def batch_started(self, size: int, tokens: int, waits_s: Sequence[float]) -> None:
        pass

    def batch_finished(self, seconds: float, ok: bool) -> None:
        pass

    def batch_split(self, size: int) -> None:
        self.splits.append(size)


@pytest.mark.asyncio
async def test_a_poisoned_item_fails_only_its_own_caller(executor: ThreadPoolExecutor) -> None:
    run = Poisoned()
    batcher = Batcher(
        run,
        BatchLimits(max_batch_size=4, max_wait_ms=LONG_WAIT_MS),
        executor=executor,
        observer=run,
    )
    outcomes = await asyncio.gather(
        batcher.submit("a"),
        batcher.submit_many(["poison", "p2"], [1, 1]),
        batcher.submit("c"),
        return_exceptions=True,
    )
    assert outcomes[0] == "A"
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == "C"
    # The poisoned request's other item is not computed once its request has failed.
    assert run.calls == [["a", "poison", "p2", "c"], ["a"], ["poison"], ["c"]]
    assert run.splits == [4]
    # Later batches are batches again.
    later = await asyncio.gather(*(batcher.submit(x) for x in "defg"))
    assert later == list("DEFG")
    assert run.calls[-1] == list("defg")
    await batcher.close()


@pytest.mark.asyncio
async def test_a_poisoned_callers_queued_items_are_dropped(executor: ThreadPoolExecutor) -> None:
    run = Poisoned()
    limits = BatchLimits(max_batch_size=2, max_wait_ms=LONG_WAIT_MS)
    batcher = Batcher(run, limits, executor=executor, observer=run)
    innocent = asyncio.ensure_future(batcher.submit("y"))
    await until(lambda: batcher.depth == 1)
    # [y, poison] fills a batch; "x2" waits behind it.
    poisoned = asyncio.ensure_future(batcher.submit_many(["poison", "x2"], [1, 1]))
    assert await innocent == "Y"
    with pytest.raises(ValueError, match="poison"):
        await poisoned
    assert run.calls == [["y", "poison"], ["y"], ["poison"]]  # "x2" was never computed
    await until(lambda: batcher.depth == 0)  # dropped from the queue
    await batcher.close()


@pytest.mark.asyncio
async def test_full_queue_answers_overloaded_with_retry_after(
    executor: ThreadPoolExecutor,
) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, BatchLimits(max_batch_size=1, max_queue=2), executor=executor)
    running = asyncio.ensure_future(batcher.submit("running"))
    await _wait_thread_event(run.entered)
    queued = [asyncio.ensure_future(batcher.submit(x)) for x in ("q1", "q2")]
    await until(lambda: batcher.depth == 2)
    with pytest.raises(Overloaded) as refused:
        await batcher.submit("one too many")
    assert refused.value.status_code == 429
    assert refused.value.headers["Retry-After"] == "1"
    gate.set()
    assert await running == "RUNNING"
    assert await asyncio.gather(*queued) == ["Q1", "Q2"]
    await batcher.close()


@pytest.mark.asyncio
async def test_close_fails_queued_callers_instead_of_hanging(
    executor: ThreadPoolExecutor,
) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, BatchLimits(max_batch_size=1), executor=executor)
    running = asyncio.ensure_future(batcher.submit("running"))
    await _wait_thread_event(run.entered)
    queued = asyncio.ensure_future(batcher.submit("queued"))
    await until(lambda: batcher.depth == 1)
    closing = asyncio.ensure_future(batcher.close())
    for caller in (queued, running):  # queued, and in the batch that was executing
        with pytest.raises(Overloaded):
            await caller
    gate.set()
    await closing
    with pytest.raises(Overloaded):
        await batcher.submit("after close")


# -- refill: after a batch, wait for the callers it answered ------------------------------------

# Only the callers' return (or a full batch) ends these refill waits.
REFILL = BatchLimits(max_batch_size=8, refill_wait_ms=LONG_WAIT_MS, refill_share=1e9)


@pytest.mark.asyncio
async def test_refill_waits_for_every_answered_caller(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = Batcher(run, REFILL, executor=executor)
    assert await asyncio.gather(batcher.submit("a1"), batcher.submit("b1")) == ["A1", "B1"]
    # Caller a is back first: without the refill wait its item would run alone.
    a2 = asyncio.ensure_future(batcher.submit("a2"))
    await until(lambda: batcher.depth == 1)
    for _ in range(100):
        await asyncio.sleep(0)
    assert batcher.depth == 1
    assert len(run.batches) == 1
    b2 = asyncio.ensure_future(batcher.submit("b2"))
    assert await asyncio.gather(a2, b2) == ["A2", "B2"]
    assert run.batches == [["a1", "b1"], ["a2", "b2"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_refill_never_delays_a_lone_caller(executor: ThreadPoolExecutor) -> None:
    """One caller, even with several items per request, is never kept waiting for anyone."""
    run = Recorder()
    batcher = Batcher(run, REFILL, executor=executor)
    # A wait would last the whole LONG_WAIT_MS: wait_for fails the test long before that.
    assert await asyncio.wait_for(batcher.submit_many(list("xyz"), [1] * 3), 10) == list("XYZ")
    assert await asyncio.wait_for(batcher.submit("w"), 10) == "W"
    assert await asyncio.wait_for(batcher.submit_many(["u", "v"], [1, 1]), 10) == ["U", "V"]
    assert run.batches == [["x", "y", "z"], ["w"], ["u", "v"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_refill_ends_when_the_batch_is_full(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = Batcher(
        run,
        BatchLimits(max_batch_size=2, refill_wait_ms=LONG_WAIT_MS, refill_share=1e9),
        executor=executor,
    )
    await asyncio.gather(batcher.submit("a1"), batcher.submit("b1"))
    # b never comes back, but two items from a fill the batch.
    assert await batcher.submit_many(["a2", "a3"], [1, 1]) == ["A2", "A3"]
    assert run.batches == [["a1", "b1"], ["a2", "a3"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_refill_wait_is_bounded(executor: ThreadPoolExecutor) -> None:
    """A caller that does not come back holds the next batch no longer than the wait."""
    run = Recorder()
    limits = BatchLimits(max_batch_size=8, refill_wait_ms=20, refill_share=1e9)
    batcher = Batcher(run, limits, executor=executor)
    await asyncio.gather(batcher.submit("a1"), batcher.submit("b1"))
    assert await asyncio.wait_for(batcher.submit("a2"), 10) == "A2"
    assert run.batches == [["a1", "b1"], ["a2"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_one_callers_items_queue_all_or_none(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, BatchLimits(max_batch_size=4, max_queue=3), executor=executor)
    # An empty queue takes a request larger than the limit (the request size limit bounds it).
    big = asyncio.ensure_future(batcher.submit_many(list("abcde"), [1] * 5))
    await _wait_thread_event(run.entered)
    assert batcher.depth == 1
    with pytest.raises(Overloaded, match="1 items are queued and 3 more"):
        await batcher.submit_many(["x", "y", "z"], [1, 1, 1])
    assert batcher.depth == 1  # nothing of the refused request was queued
    gate.set()
    assert await big == list("ABCDE")
    assert run.batches == [["a", "b", "c", "d"], ["e"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_a_failed_batch_fails_its_callers_queued_items(
    executor: ThreadPoolExecutor,
) -> None:
    calls: list[list[str]] = []

    def fail_first(items: list[str]) -> list[str]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("first batch broke")
        return [item.upper() for item in items]

    batcher = Batcher(fail_first, BatchLimits(max_batch_size=2), executor=executor)
    with pytest.raises(RuntimeError, match="first batch broke"):
        await batcher.submit_many(["a", "b", "c"], [1, 1, 1])
    # "c" was queued behind the failed batch: its request has failed, so it is not computed.
    assert await batcher.submit("d") == "D"
    assert calls == [["a", "b"], ["d"]]
    await batcher.close()


# -- background work: a batch job's lines yield to online callers -------------------------------


@pytest.mark.asyncio
async def test_online_items_queued_behind_background_ones_run_first(
    executor: ThreadPoolExecutor,
) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, BatchLimits(max_batch_size=8), executor=executor)
    running = asyncio.ensure_future(batcher.submit("busy"))
    await _wait_thread_event(run.entered)
    background = asyncio.ensure_future(batcher.submit_many(["b1", "b2"], [1, 1], background=True))
    await until(lambda: batcher.depth == 2)
    online = asyncio.ensure_future(batcher.submit("o1"))
    await until(lambda: batcher.depth == 3)
    gate.set()
    assert await running == "BUSY"
    assert await online == "O1"
    assert await background == ["B1", "B2"]
    # The online item came after the background ones but ran first, and alone: the two lanes
    # never share a batch.
    assert run.batches == [["busy"], ["o1"], ["b1", "b2"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_background_work_runs_when_nothing_online_waits(
    executor: ThreadPoolExecutor,
) -> None:
    run = Recorder()
    batcher = Batcher(run, BatchLimits(max_batch_size=8), executor=executor)
    assert await batcher.submit_many(["b1", "b2"], [1, 1], background=True) == ["B1", "B2"]
    assert run.batches == [["b1", "b2"]]
    await batcher.close()


@pytest.mark.asyncio
async def test_the_background_lane_is_bounded_on_its_own(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, BatchLimits(max_batch_size=1, max_queue=2), executor=executor)
    running = asyncio.ensure_future(batcher.submit("running"))
    await _wait_thread_event(run.entered)
    queued = asyncio.ensure_future(batcher.submit_many(["b1", "b2"], [1, 1], background=True))
    await until(lambda: batcher.depth == 2)
    with pytest.raises(Overloaded):
        await batcher.submit_many(["b3"], [1], background=True)
    # A full background lane leaves online callers their own room.
    online = asyncio.ensure_future(batcher.submit("o1"))
    await until(lambda: batcher.depth == 3)
    gate.set()
    assert await running == "RUNNING"
    assert await online == "O1"
    assert await queued == ["B1", "B2"]
    await batcher.close()


@pytest.mark.asyncio
async def test_close_fails_queued_background_callers(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, BatchLimits(max_batch_size=1), executor=executor)
    running = asyncio.ensure_future(batcher.submit("running"))
    await _wait_thread_event(run.entered)
    queued = asyncio.ensure_future(batcher.submit_many(["b1"], [1], background=True))
    await until(lambda: batcher.depth == 1)
    closing = asyncio.ensure_future(batcher.close())
    for caller in (queued, running):
        with pytest.raises(Overloaded):
            await caller
    gate.set()
    await closing
