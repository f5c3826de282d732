"""A caller's rate limits and quotas, read from its principal and enforced by the limiter.

Example::

    limits = Limits(RateLimiter(settings.redis_url))
    await limits.check(principal)              # per request: 429 when over a limit
    held = await limits.reserve_tokens(principal, 600)  # before serving: 429 if it won't fit
    await held.settle(42)                      # after the response: what it really used
"""

from __future__ import annotations

from openmaas.auth.entities import Principal
from openmaas.auth.policy import LimitPolicy
from openmaas.auth.ratelimit import RateLimiter, RateLimitStatus, TokenReservation
from openmaas.auth.scopes import Scope


class Limits:
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    @staticmethod
    def policies(principal: Principal) -> tuple[LimitPolicy, LimitPolicy] | None:
        """(project, key) policies, or None when neither sets anything (nothing to count).

        An admin key is bound only by limits set on the key itself: its project's limits
        bound the tenants' keys, and an admin who set `requests_per_minute: 0` on its own
        project would otherwise have no key left to undo it with."""
        project_limits = {} if Scope.ADMIN in principal.scopes else dict(principal.project_limits)
        if not project_limits and not principal.key_limits:
            return None
        return LimitPolicy.from_json(project_limits), LimitPolicy.from_json(
            dict(principal.key_limits)
        )

    async def check(self, principal: Principal) -> RateLimitStatus | None:
        """429 when over a limit; else what remains of this minute's (None: no limits)."""
        found = self.policies(principal)
        if found is None:
            return None
        return await self.limiter.check_request(principal.project, principal.key_id, *found)

    async def reserve_tokens(self, principal: Principal, tokens: int) -> TokenReservation | None:
        """Hold an upper bound of a request's tokens until it is settled (429 when it does
        not fit); None when the caller has no limits."""
        found = self.policies(principal)
        if found is None:
            return None
        return await self.limiter.reserve_tokens(
            principal.project, principal.key_id, *found, tokens
        )

    async def charge_tokens(self, principal: Principal, tokens: int) -> None:
        found = self.policies(principal)
        if found is not None and tokens > 0:
            await self.limiter.charge_tokens(principal.project, principal.key_id, *found, tokens)

    async def charge_training_job(self, principal: Principal) -> None:
        found = self.policies(principal)
        if found is not None:
            await self.limiter.charge_training_job(principal.project, principal.key_id, *found)

    async def close(self) -> None:
        await self.limiter.close()
