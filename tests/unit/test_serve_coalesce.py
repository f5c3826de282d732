"""Coalescing calls to a Ray Serve deployment (`serve_coalesce.Coalescer`), against a send
function held at asyncio events: which requests go together is decided by the slots, never
by a sleep."""

from __future__ import annotations

import asyncio

import pytest

from openmaas.scaleout.serve_coalesce import Coalescer
from tests.loop_turns import until


class Deployment:
    """A send function that records each call's group and returns when the test says so."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.fail: Exception | None = None

    async def send(self, group: list[str]) -> list[str]:
        self.groups.append(list(group))
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail is not None:
            raise self.fail
        return [request.upper() for request in group]


@pytest.mark.asyncio
async def test_a_lone_request_goes_at_once_and_gets_its_own_reply() -> None:
    deployment = Deployment()
    calls = Coalescer(deployment.send, limit=2, max_group=8)
    reply = asyncio.create_task(calls.submit("a"))
    await until(lambda: deployment.groups == [["a"]])
    deployment.gates[0].set()
    assert await reply == "A"
    assert (calls.calls, calls.requests, calls.in_flight) == (1, 1, 0)


@pytest.mark.asyncio
async def test_requests_that_arrive_while_every_slot_is_busy_go_together_when_one_frees() -> None:
    deployment = Deployment()
    calls = Coalescer(deployment.send, limit=2, max_group=3)
    first = [asyncio.create_task(calls.submit(r)) for r in ("a", "b")]
    await until(lambda: len(deployment.groups) == 2)
    later = [asyncio.create_task(calls.submit(r)) for r in ("c", "d", "e", "f")]
    await until(lambda: calls.waiting == 4)
    assert deployment.groups == [["a"], ["b"]]  # both slots out; the rest wait

    deployment.gates[1].set()  # "b" returns: one slot frees for up to three waiting
    await until(lambda: len(deployment.groups) == 3)
    assert deployment.groups[2] == ["c", "d", "e"]
    assert await first[1] == "B"
    deployment.gates[0].set()
    await until(lambda: len(deployment.groups) == 4)
    assert deployment.groups[3] == ["f"]
    for gate in deployment.gates[2:]:
        gate.set()
    assert await asyncio.gather(first[0], *later) == ["A", "C", "D", "E", "F"]
    assert (calls.calls, calls.requests) == (4, 6)


@pytest.mark.asyncio
async def test_a_failed_call_fails_every_request_it_carried_and_no_other() -> None:
    deployment = Deployment()
    calls = Coalescer(deployment.send, limit=1, max_group=8)
    alone = asyncio.create_task(calls.submit("a"))
    await until(lambda: len(deployment.groups) == 1)
    together = [asyncio.create_task(calls.submit(r)) for r in ("b", "c")]
    await until(lambda: calls.waiting == 2)
    deployment.gates[0].set()
    assert await alone == "A"
    await until(lambda: len(deployment.groups) == 2)
    deployment.fail = RuntimeError("two replicas died")
    deployment.gates[1].set()
    for request in together:
        with pytest.raises(RuntimeError, match="two replicas died"):
            await request
    deployment.fail = None
    after = asyncio.create_task(calls.submit("d"))  # the slot came back
    await until(lambda: len(deployment.groups) == 3)
    deployment.gates[2].set()
    assert await after == "D"


@pytest.mark.asyncio
async def test_a_request_whose_caller_went_away_while_waiting_is_not_sent() -> None:
    deployment = Deployment()
    calls = Coalescer(deployment.send, limit=1, max_group=8)
    busy = asyncio.create_task(calls.submit("a"))
    await until(lambda: len(deployment.groups) == 1)
    gone = asyncio.create_task(calls.submit("b"))
    kept = asyncio.create_task(calls.submit("c"))
    await until(lambda: calls.waiting == 2)
    gone.cancel()
    deployment.gates[0].set()
    await until(lambda: len(deployment.groups) == 2)
    assert deployment.groups[1] == ["c"]
    deployment.gates[1].set()
    assert (await busy, await kept) == ("A", "C")
    assert gone.cancelled()


def test_limits_below_one_are_refused() -> None:
    async def send(group: list[str]) -> list[str]:
        return group

    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(send, limit=0, max_group=4)
