"""Slow down, then refuse, a client address that keeps presenting bad API keys.

Failures are counted per address in a window of `block_s` seconds from its first failure. Past
`failures_before_delay` each further failure is answered later (0.25 s, doubling, capped at
2 s); at `failures_before_block` the address is refused outright for `block_s` seconds. The
counts live in a `limits` storage, so with Redis every server process shares them.

An attempt is counted before its key is verified (`admit`: one atomic increment, then the
decision on the count it returned), and refunded if the key was good or the attempt refused.
Checking first and counting after the verification let every one of 200 concurrent wrong keys
from a fresh address through the check (audit finding); counted first, at most
`failures_before_block` attempts of an address are ever verified in a window, however many
arrive together and on however many processes share the Redis.

Example::

    guard = BruteForceGuard(settings.redis_url, failures_before_delay=5,
                            failures_before_block=20, block_s=300)
    attempt = await guard.admit(address)  # TooManyAuthFailures while the address is refused
    try:
        principal = auth.authenticate(presented_key)
    except AuthenticationFailed:
        await asyncio.sleep(await guard.failed(attempt))
        raise
    await guard.release(attempt)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from openmaas.auth.ratelimit import DEFAULT_NAMESPACE, CounterStorage
from openmaas.errors import TooManyAuthFailures


@dataclass(frozen=True, slots=True)
class Attempt:
    """One admitted attempt: its address and its place in the address's count."""

    address: str
    number: int


class BruteForceGuard:
    """Failed API key attempts per client address: delays, then a temporary block.

    A successful attempt does not reset the count (it only takes back its own), so a caller
    holding one valid key cannot use it to keep guessing others.
    """

    def __init__(
        self,
        storage_url: str = "",
        *,
        failures_before_delay: int = 5,
        failures_before_block: int = 20,
        block_s: int = 300,
        first_delay_s: float = 0.25,
        max_delay_s: float = 2.0,
        namespace: str = DEFAULT_NAMESPACE,
        timeout_s: float = 2.0,
    ) -> None:
        if min(failures_before_delay, failures_before_block, block_s) < 1:
            raise ValueError("failure thresholds and block_s must be >= 1")
        self.failures_before_delay = failures_before_delay
        self.failures_before_block = failures_before_block
        self.block_s = block_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.storage = CounterStorage(storage_url, namespace=namespace, timeout_s=timeout_s)

    async def check(self, address: str) -> None:
        """Raise TooManyAuthFailures (with Retry-After) while `address` is refused."""
        if await self.storage.backend.get(_block_key(address)) > 0:
            raise await self._refusal(address)

    async def admit(self, address: str) -> Attempt:
        """Count an attempt from `address` before its key is verified, or refuse it.

        The count is taken by one atomic increment and the decision made on the value it
        returned, so concurrent attempts (of this process or any sharing the Redis) never all
        pass: the one that would go past `failures_before_block` starts the block and is
        refused, and so is every one after it. A refused attempt is not counted.
        """
        await self.check(address)
        backend = self.storage.backend
        number = await backend.incr(_failures_key(address), self.block_s)
        if number > self.failures_before_block:
            # The block's expiry is set by its first increment only: later refusals racing
            # in from other processes do not prolong it.
            await backend.incr(_block_key(address), self.block_s)
            await self._refund(address)
            raise await self._refusal(address)
        return Attempt(address, number)

    async def release(self, attempt: Attempt) -> None:
        """The attempt's key was good (or could not be checked): take back its count, and
        only its own."""
        await self._refund(attempt.address)

    async def failed(self, attempt: Attempt) -> float:
        """The attempt's key was bad (it stays counted); return how many seconds to wait
        before answering 401. The failure that reaches `failures_before_block` starts the
        block: admit() and check() refuse the address from then on, for `block_s` seconds."""
        if attempt.number >= self.failures_before_block:
            await self.storage.backend.incr(_block_key(attempt.address), self.block_s)
        return self.delay(attempt.number)

    def delay(self, failures: int) -> float:
        excess = failures - self.failures_before_delay
        if excess <= 0:
            return 0.0
        # Doubling; the exponent is capped only to keep the float finite.
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** min(excess - 1, 64))

    async def close(self) -> None:
        await self.storage.close()

    async def _refund(self, address: str) -> None:
        # A negative increment: atomic like the count itself. On a window that has just
        # expired it leaves -1 with the window's expiry, which the next attempt makes 0.
        await self.storage.backend.incr(_failures_key(address), self.block_s, -1)

    async def _refusal(self, address: str) -> TooManyAuthFailures:
        # Both storages time expiry with time.time().
        expires_at = await self.storage.backend.get_expiry(_block_key(address))
        retry_after = max(1, math.ceil(expires_at - time.time()))
        return TooManyAuthFailures(
            f"too many failed API key attempts from this address; wait {retry_after} s "
            "before trying again",
            retry_after_seconds=retry_after,
        )


def _failures_key(address: str) -> str:
    return f"auth_failures/{address}"


def _block_key(address: str) -> str:
    return f"auth_blocked/{address}"
