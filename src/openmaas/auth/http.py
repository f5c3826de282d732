"""Turn an HTTP request's credentials into a Principal, cheaply and safely.

Keys arrive as `Authorization: Bearer <key>` (what the openai client sends) or `X-API-Key`.
A verified key is reused for `ttl_s` without a store read; revocations made through this
process drop it at once (`forget`), those made by another process show within `ttl_s`.
Concurrent requests with a key that is not cached share one store read: under load every
cached key expires while dozens of requests carry it, and each would otherwise read the store.
Attempts with a key that is not cached are counted per client address by the brute-force
guard (when one is set) before the key is verified; good keys take their count back.

Example::

    authenticator = Authenticator(auth_service, ttl_s=1.0)
    principal = await authenticator.authenticate(bearer_or_api_key_header, "10.0.0.7")
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from openmaas.auth.bruteforce import Attempt
from openmaas.auth.clients import ClientAddresses
from openmaas.auth.entities import Principal
from openmaas.auth.service import MISSING_KEY, AuthService
from openmaas.errors import AuthenticationFailed, InvalidRequest, TooManyAuthFailures

# Entries beyond this are dropped oldest first; a key is one entry however often it is used.
MAX_CACHED_KEYS = 10_000
MAX_KEY_HEADER_CHARS = 256


class FailureGuard(Protocol):
    """What the authenticator needs from the brute-force guard (`auth.bruteforce`)."""

    max_delay_s: float

    async def admit(self, address: str) -> Attempt: ...

    async def release(self, attempt: Attempt) -> None: ...

    async def failed(self, attempt: Attempt) -> float: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    fresh_until: float  # monotonic
    expires_at: datetime | None  # the key's own expiry


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in `Authorization: Bearer …` or `X-API-Key`, or None when neither is sent."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationFailed(
                "the Authorization header must be 'Bearer <API key>'", code="invalid_api_key"
            )
        return _bounded(value.strip())
    api_key = headers.get("x-api-key")
    return _bounded(api_key.strip()) if api_key and api_key.strip() else None


def _bounded(value: str) -> str:
    if len(value) > MAX_KEY_HEADER_CHARS:
        raise InvalidRequest(f"an API key is at most {MAX_KEY_HEADER_CHARS} characters")
    return value


class Authenticator:
    """`admit_valid_keys_when_blocked`: a blocked address still has its keys verified, and a
    good one is served (a failure is still answered 429, after the longest delay). Off, a
    blocked address is refused whatever key it presents (unless the key is in the cache).
    `on_verified` is told each verification's outcome ("valid", "invalid"), or "refused" for
    an attempt the guard refused unverified (the server counts them in a metric)."""

    def __init__(
        self,
        service: AuthService,
        *,
        ttl_s: float,
        guard: FailureGuard | None = None,
        admit_valid_keys_when_blocked: bool = False,
        clients: ClientAddresses | None = None,
        on_verified: Callable[[str], None] | None = None,
    ) -> None:
        self.service = service
        self.ttl_s = ttl_s
        self.guard = guard
        self.admit_valid_keys_when_blocked = admit_valid_keys_when_blocked
        self.on_verified = on_verified
        # Where a request comes from (the socket, or a trusted proxy's X-Forwarded-For).
        self.clients = clients or ClientAddresses()
        self._cache: dict[bytes, _Cached] = {}
        self._verifying: dict[bytes, asyncio.Future[tuple[Principal, datetime | None]]] = {}
        self._generation = 0  # moved by `forget`: a read that began before is not cached

    async def authenticate(self, plaintext: str | None, address: str) -> Principal:
        if not plaintext:
            raise AuthenticationFailed(MISSING_KEY, code="missing_api_key")
        # Keyed by a digest, so the cache never holds a usable secret.
        digest = hashlib.sha256(plaintext.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            now = time.monotonic()
            expired = cached.expires_at is not None and datetime.now(UTC) >= cached.expires_at
            if now < cached.fresh_until and not expired:
                return cached.principal
            del self._cache[digest]
        attempt: Attempt | None = None
        blocked: TooManyAuthFailures | None = None
        verifying = self._verifying.get(digest)
        # One attempt per key checked, not per request: concurrent requests with one key
        # share its verification, so a burst of a client's requests with its (not yet cached)
        # key counts once, as a guesser's burst of one wrong key does. Counted per request, 64
        # clients sharing a good key blocked their own address.
        if verifying is None and self.guard is not None:
            try:
                attempt = await self.guard.admit(address)
            except TooManyAuthFailures as refused:
                if not self.admit_valid_keys_when_blocked:
                    self._count("refused")
                    raise
                blocked = refused
            verifying = self._verifying.get(digest)  # started while this one was admitted
        checked_here = verifying is None  # the outcome is counted once, by this request
        if verifying is None:
            # A store read (and at most once a minute a write of last_used_at): off the loop.
            verifying = asyncio.ensure_future(asyncio.to_thread(self._verify, plaintext))
            self._verifying[digest] = verifying
            verifying.add_done_callback(functools.partial(self._verified, digest, self._generation))
        try:
            # Shielded: a caller that goes away does not cancel the read others wait for.
            principal, _ = await asyncio.shield(verifying)
        except AuthenticationFailed:
            if checked_here:
                self._count("invalid")
            if self.guard is not None:
                if blocked is not None:
                    await asyncio.sleep(self.guard.max_delay_s)
                    raise blocked from None
                if attempt is not None:  # the request that had the key checked
                    delay = await self.guard.failed(attempt)
                    if delay > 0:
                        await asyncio.sleep(delay)
            raise
        except Exception:  # the store failed: the attempt says nothing about the key
            if self.guard is not None and attempt is not None:
                await self.guard.release(attempt)
            raise
        if checked_here:
            self._count("valid")
        if self.guard is not None and attempt is not None:
            await self.guard.release(attempt)
        return principal

    def _count(self, outcome: str) -> None:
        if self.on_verified is not None:
            self.on_verified(outcome)

    def _verified(
        self,
        digest: bytes,
        generation: int,
        verifying: asyncio.Future[tuple[Principal, datetime | None]],
    ) -> None:
        """Cache a finished read's principal, once for all who waited on it."""
        if self._verifying.get(digest) is verifying:
            del self._verifying[digest]
        if verifying.cancelled() or verifying.exception() is not None:
            return
        if self.ttl_s > 0 and generation == self._generation:
            principal, expires_at = verifying.result()
            if len(self._cache) >= MAX_CACHED_KEYS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[digest] = _Cached(principal, time.monotonic() + self.ttl_s, expires_at)

    def _verify(self, plaintext: str) -> tuple[Principal, datetime | None]:
        principal = self.service.authenticate(plaintext)
        return principal, principal.expires_at

    def forget(self, key_id: int | None = None, project: str | None = None) -> None:
        """Drop cached principals of a key (revoked, limits changed) or of a whole project.
        Reads in flight finish for their callers but are neither cached nor shared further."""
        self._generation += 1
        self._verifying.clear()
        for digest, entry in list(self._cache.items()):
            matches_key = key_id is not None and entry.principal.key_id == key_id
            matches_project = project is not None and entry.principal.project == project
            if matches_key or matches_project or (key_id is None and project is None):
                self._cache.pop(digest, None)
