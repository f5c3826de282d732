"""Waiting on event-driven asyncio code by loop turns, not by sleeps: a test decides its
outcome on state, never on timing.

Example::

    await until(lambda: calls.waiting == 2)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], object], *, steps: int = 10_000) -> None:
    """Yield to the loop until `predicate()` holds (event-driven code needs a few turns)."""
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")
