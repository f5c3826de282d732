"""Slow down, then refuse, a client address that keeps presenting bad API keys.

Failures are counted per address in a window of `block_s` seconds from its first failure. Past
`failures_before_delay` each further failure is answered later (0.25 s, doubling, capped at
2 s); at `failures_before_block` the address is refused outright for `block_s` seconds. The
counts live in a `limits` storage, so with Redis every server process shares them.

Example::

    guard = BruteForceGuard(settings.redis_url, failures_before_delay=5,
                            failures_before_block=20, block_s=300)
    await guard.check(address)  # TooManyAuthFailures while the address is refused
    try:
        principal = auth.authenticate(presented_key)
    except AuthenticationFailed:
        await asyncio.sleep(await guard.failed(address))
        raise
"""

from __future__ import annotations

import math
import time

from openmaas.auth.ratelimit import DEFAULT_NAMESPACE, CounterStorage
from openmaas.errors import TooManyAuthFailures


class BruteForceGuard:
    """Failed API key attempts per client address: delays, then a temporary block.

    A successful attempt does not reset the count, so a caller holding one valid key cannot
    use it to keep guessing others.
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
        backend = self.storage.backend
        if await backend.get(_block_key(address)) > 0:
            # Both storages time expiry with time.time().
            expires_at = await backend.get_expiry(_block_key(address))
            retry_after = max(1, math.ceil(expires_at - time.time()))
            raise TooManyAuthFailures(
                f"too many failed API key attempts from this address; wait {retry_after} s "
                "before trying again",
                retry_after_seconds=retry_after,
            )

    async def failed(self, address: str) -> float:
        """Record a failed attempt; return how many seconds to wait before answering 401.

        The failure that reaches `failures_before_block` starts the block; check() refuses
        the address from then on, for `block_s` seconds.
        """
        backend = self.storage.backend
        failures = await backend.incr(_failures_key(address), self.block_s)
        if failures >= self.failures_before_block:
            # The block's expiry is set by its first increment only: later failures racing
            # in from other processes do not prolong it.
            await backend.incr(_block_key(address), self.block_s)
        excess = failures - self.failures_before_delay
        if excess <= 0:
            return 0.0
        # Doubling; the exponent is capped only to keep the float finite.
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** min(excess - 1, 64))

    async def close(self) -> None:
        await self.storage.close()


def _failures_key(address: str) -> str:
    return f"auth_failures/{address}"


def _block_key(address: str) -> str:
    return f"auth_blocked/{address}"
