"""Waiting on a condition a real server reaches in its own time (a job finishing, a worker
starting), polled: the server offers no event to wait on from outside."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = 120.0) -> T:
    """`check()`'s first value that is neither None nor False; AssertionError naming `what`
    after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found is not None and found is not False:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
