"""Rate limits and quotas per project and per API key, counted in a `limits` asyncio storage.

Counters live in this process's memory by default, or in Redis (OPENMAAS_REDIS_URL) so that
every server process and node sharing that Redis and namespace enforces one combined limit.

Every limit is a counter per subject (the project, or the key) and calendar period (UTC minute,
day or month), keyed by the period's start and expiring after its end. So a day's quota resets
at exactly 00:00 UTC, and the reset time a refusal names is exact.

Minute windows are fixed, clock-aligned minutes rather than moving windows, for three reasons:
tokens are charged after the fact in amounts of thousands, and a moving window stores one entry
per unit (`limits`' moving window pushes `cost` timestamps; see
https://limits.readthedocs.io/en/stable/strategies.html), so tokens need a counter; requests
use the same minute so both per-minute limits reset together and Retry-After is exact; and a
counter is one atomic INCR in Redis and O(1) memory. The cost: across a minute boundary up to
twice a limit can pass (the end of one minute, then the start of the next), which per-minute
fairness limits can accept; queue depth, not these limits, protects the server from overload.

Tokens are reserved before a request runs and settled after it: the reservation holds an
upper bound of what the request may use (its input's size, plus `max_tokens` for generation)
and is refused when that does not fit in what remains, so that concurrent requests, in one
process or many sharing a Redis, cannot pass a token limit together; settling replaces the
bound with the tokens the request really used (a refund, or an extra charge where the bound
was low). Before reservations, one 2,048-item request checked against a limit of 100 tokens
per minute was charged after it ran and overshot the limit 217 times.

Example::

    limiter = RateLimiter(settings.redis_url)
    await limiter.check_request("acme", key.id, project_policy, key_policy)  # or 429
    held = await limiter.reserve_tokens("acme", key.id, project_policy, key_policy, 600)
    ...  # serve the request
    await held.settle(usage.total_tokens)
    await limiter.close()
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import redis.asyncio
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from openmaas.auth.policy import LimitPolicy
from openmaas.errors import OpenMaaSError, QuotaExhausted, RateLimited

DEFAULT_NAMESPACE = "openmaas"
# OPENMAAS_REDIS_URL scheme -> the `limits` asyncio storage scheme for it.
REDIS_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}
# A counter outlives its period by this much: only a lagging clock still writes to it.
EXPIRY_MARGIN_S = 60


def utc_now() -> datetime:
    return datetime.now(UTC)


class CounterStorage:
    """A `limits` asyncio storage chosen by URL: "" for this process's memory, or a Redis URL
    (redis://, rediss://, unix://) shared by every process using the same namespace.

    With Redis, storage failures raise `limits.errors.StorageError`; each Redis call gives up
    after `timeout_s`.

    Example::

        counters = CounterStorage("redis://127.0.0.1:6379", namespace="openmaas")
        await counters.backend.incr("requests/key/7", 60)
        await counters.close()
    """

    def __init__(
        self, url: str = "", *, namespace: str = DEFAULT_NAMESPACE, timeout_s: float = 2.0
    ) -> None:
        self.url = url
        self.namespace = namespace
        self._pool: redis.asyncio.ConnectionPool | None = None
        if not url:
            # One process's counters; the namespace only matters when storage is shared.
            self.backend: Storage = MemoryStorage()
            return
        scheme = urlsplit(url).scheme
        if scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"unsupported limits storage {scheme!r}: use redis://, rediss:// or unix:// "
                "(a Redis), or nothing for this process's memory"
            )
        # Our own pool, so that close() can close its connections (limits has no close).
        self._pool = redis.asyncio.ConnectionPool.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.backend = RedisStorage(
            REDIS_SCHEMES[scheme] + url[len(scheme) :],
            wrap_exceptions=True,
            implementation="redispy",  # the `redis` package; `coredis` is not installed
            key_prefix=namespace,
            # limits types options as scalars but hands them to redis.asyncio.Redis as is.
            connection_pool=self._pool,  # type: ignore[arg-type]
        )

    @property
    def is_shared(self) -> bool:
        return self._pool is not None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        elif isinstance(self.backend, MemoryStorage):
            # Its background expiry sweep; nothing else holds resources.
            timer = self.backend.timer
            if timer is not None and not timer.done():
                timer.cancel()


@dataclass(frozen=True, slots=True)
class _Window:
    """One UTC calendar period: its counters are keyed by `label` and reset at `end`."""

    label: str
    end: datetime
    phrase: str  # "this minute", "today", "this month"
    name: str  # "minute", "day", "month"


def _minute(now: datetime) -> _Window:
    start = now.replace(second=0, microsecond=0)
    return _Window(
        start.strftime("%Y-%m-%dT%H:%M"), start + timedelta(minutes=1), "this minute", "minute"
    )


def _day(now: datetime) -> _Window:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return _Window(start.strftime("%Y-%m-%d"), start + timedelta(days=1), "today", "day")


def _month(now: datetime) -> _Window:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return _Window(start.strftime("%Y-%m"), end, "this month", "month")


@dataclass(frozen=True, slots=True)
class _Meter:
    """What one LimitPolicy field counts, and over which period."""

    field: str
    unit: str  # singular
    units: str  # plural
    verb: str  # "the project 'acme' has <verb> its 3 training jobs for today"
    period: Callable[[datetime], _Window]
    quota: bool  # a calendar quota (QuotaExhausted) rather than a rate (RateLimited)


REQUESTS_PER_MINUTE = _Meter("requests_per_minute", "request", "requests", "made", _minute, False)
TOKENS_PER_MINUTE = _Meter("tokens_per_minute", "token", "tokens", "used", _minute, False)
TOKENS_PER_DAY = _Meter("tokens_per_day", "token", "tokens", "used", _day, True)
TOKENS_PER_MONTH = _Meter("tokens_per_month", "token", "tokens", "used", _month, True)
TRAINING_JOBS_PER_DAY = _Meter(
    "training_jobs_per_day", "training job", "training jobs", "started", _day, True
)
# Longest period first: when several are used up, the refusal names the one resetting last.
TOKEN_METERS = (TOKENS_PER_MONTH, TOKENS_PER_DAY, TOKENS_PER_MINUTE)


@dataclass(frozen=True, slots=True)
class _Subject:
    """Whose counters: the project (its total over all keys) or one key."""

    id: str
    label: str
    policy: LimitPolicy


@dataclass(frozen=True, slots=True)
class _Counter:
    meter: _Meter
    subject: _Subject
    window: _Window
    limit: int

    @property
    def key(self) -> str:
        return f"{self.meter.field}/{self.subject.id}/{self.window.label}"

    def expiry_s(self, now: datetime) -> int:
        return _seconds_until(self.window.end, now) + EXPIRY_MARGIN_S

    def refusal(self, now: datetime, asked: int = 0, left: int = 0) -> OpenMaaSError:
        """The answer when this counter has no room; `asked` > 0: a reservation of that many
        units, refused with `left` of the limit remaining."""
        if asked:
            return self._reservation_refusal(now, asked, left)
        meter, window, who = self.meter, self.window, self.subject.label
        retry_after = _seconds_until(window.end, now)
        units = meter.unit if self.limit == 1 else meter.units
        if not meter.quota:
            spent = Remaining(self.limit, 0, retry_after)
            status = (
                RateLimitStatus(requests=spent)
                if meter is REQUESTS_PER_MINUTE
                else RateLimitStatus(tokens=spent)
            )
            return RateLimited(
                f"rate limit reached: {who} is limited to {self.limit} {units} per "
                f"{window.name}; retry in {retry_after} s",
                retry_after_seconds=retry_after,
                headers={name.decode(): value.decode() for name, value in status.headers()},
            )
        if self.limit == 0:
            used = f"{who} has a quota of 0 {meter.units} per {window.name}"
        else:
            used = f"{who} has {meter.verb} its {self.limit} {units} for {window.phrase}"
        resets = window.end.strftime("%Y-%m-%dT%H:%M:%SZ")
        return QuotaExhausted(
            f"{used}; the quota resets at {resets}", retry_after_seconds=retry_after
        )

    def _reservation_refusal(self, now: datetime, asked: int, left: int) -> OpenMaaSError:
        meter, window, who = self.meter, self.window, self.subject.label
        retry_after = _seconds_until(window.end, now)
        units = meter.unit if self.limit == 1 else meter.units
        limit = f"{self.limit} {units} per {window.name}"
        needs = (
            f"this request may use up to {asked} {meter.units} (an upper bound from the size "
            "of its input, plus max_tokens where it generates)"
        )
        if asked > self.limit:
            # Waiting never helps: say so, and what to change.
            message = (
                f"request too large: {needs}, more than {who} may use in a whole "
                f"{window.name} ({limit}); send fewer or shorter inputs, or a lower max_tokens"
            )
            if meter.quota:
                return QuotaExhausted(message, retry_after_seconds=retry_after)
            status = RateLimitStatus(tokens=Remaining(self.limit, left, retry_after))
            return RateLimited(
                message,
                retry_after_seconds=retry_after,
                headers={
                    **{name.decode(): value.decode() for name, value in status.headers()},
                    "x-should-retry": "false",
                },
            )
        if meter.quota:
            resets = window.end.strftime("%Y-%m-%dT%H:%M:%SZ")
            return QuotaExhausted(
                f"{who} has {left} of its {limit} left {window.phrase} and {needs}; "
                f"the quota resets at {resets}",
                retry_after_seconds=retry_after,
            )
        status = RateLimitStatus(tokens=Remaining(self.limit, left, retry_after))
        return RateLimited(
            f"rate limit reached: {who} is limited to {limit}, {left} remain and {needs}; "
            f"retry in {retry_after} s",
            retry_after_seconds=retry_after,
            headers={name.decode(): value.decode() for name, value in status.headers()},
        )


@dataclass(frozen=True, slots=True)
class Remaining:
    """What is left of one per-minute limit: the tightest of the project's and the key's."""

    limit: int
    remaining: int
    reset_s: int  # seconds until the minute's counter resets


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    """This minute's requests and tokens left to a caller; None where no limit is set.

    Sent as OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers."""

    requests: Remaining | None = None
    tokens: Remaining | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        found = []
        for what, left in (("requests", self.requests), ("tokens", self.tokens)):
            if left is not None:
                found += [
                    (f"x-ratelimit-limit-{what}".encode(), str(left.limit).encode()),
                    (f"x-ratelimit-remaining-{what}".encode(), str(left.remaining).encode()),
                    (f"x-ratelimit-reset-{what}".encode(), f"{left.reset_s}s".encode()),
                ]
        return found


def _tightest(counts: Iterable[tuple[_Counter, int]], now: datetime) -> Remaining | None:
    left = [
        Remaining(c.limit, max(0, c.limit - n), _seconds_until(c.window.end, now))
        for c, n in counts
    ]
    return min(left, key=lambda r: r.remaining) if left else None


def _seconds_until(end: datetime, now: datetime) -> int:
    return max(1, math.ceil((end - now).total_seconds()))


class RateLimiter:
    """Requests and tokens per minute, tokens per day and month, training jobs per day.

    A project's policy bounds the project's total over all its keys; a key's policy bounds
    that key alone and overrides the project's value for it. A field the key leaves unset
    takes the project's value, which the project's own counter already enforces (a key never
    counts more than its project), so only the fields a key sets get counters of their own.
    Limits no policy sets are not counted: a limit set mid-period starts from zero.

    `clock` (an aware datetime) decides the calendar periods; tests move it.

    Example::

        limiter = RateLimiter("redis://127.0.0.1:6379", namespace="openmaas")
        await limiter.check_request("acme", 7, project_policy, key_policy)
        held = await limiter.reserve_tokens("acme", 7, project_policy, key_policy, 2000)
        await held.settle(1234)
    """

    def __init__(
        self,
        storage_url: str = "",
        *,
        namespace: str = DEFAULT_NAMESPACE,
        clock: Callable[[], datetime] = utc_now,
        timeout_s: float = 2.0,
    ) -> None:
        self.storage = CounterStorage(storage_url, namespace=namespace, timeout_s=timeout_s)
        self._clock = clock

    async def check_request(
        self, project: str, key_id: int, project_policy: LimitPolicy, key_policy: LimitPolicy
    ) -> RateLimitStatus:
        """Count one request against the requests-per-minute limits of the project and key,
        and say how much of this minute's requests and tokens remain.

        Raises QuotaExhausted when a token quota of the day or month is used up, RateLimited
        when the tokens of this minute are used up or this request would pass a requests-
        per-minute limit. A refused request counts against nothing.
        """
        now = self._now()
        subjects = _subjects(project, key_id, project_policy, key_policy)
        counters = _counters(now, (*TOKEN_METERS, REQUESTS_PER_MINUTE), subjects)
        used = await self._refuse_used_up(counters, now)
        requests = [c for c in counters if c.meter is REQUESTS_PER_MINUTE]
        taken = await self._take(requests, now)
        tokens = [
            (c, n) for c, n in zip(counters, used, strict=True) if c.meter is TOKENS_PER_MINUTE
        ]
        return RateLimitStatus(
            requests=_tightest(zip(requests, taken, strict=True), now),
            tokens=_tightest(tokens, now),
        )

    async def charge_tokens(
        self,
        project: str,
        key_id: int,
        project_policy: LimitPolicy,
        key_policy: LimitPolicy,
        tokens: int,
    ) -> None:
        """Add a served request's tokens to the minute, day and month counters.

        Never refuses. For work that reserved nothing beforehand (reserve_tokens): such a
        request may overshoot a limit by its own size, and the next request (check_request)
        is refused.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if tokens == 0:
            return
        now = self._now()
        counters = _counters(
            now, TOKEN_METERS, _subjects(project, key_id, project_policy, key_policy)
        )
        await asyncio.gather(
            *(self.storage.backend.incr(c.key, c.expiry_s(now), tokens) for c in counters)
        )

    async def reserve_tokens(
        self,
        project: str,
        key_id: int,
        project_policy: LimitPolicy,
        key_policy: LimitPolicy,
        tokens: int,
    ) -> TokenReservation:
        """Hold `tokens` against the minute, day and month token limits of the project and
        key until the reservation is settled.

        `tokens` is an upper bound of what the request may use. Raises RateLimited (per
        minute) or QuotaExhausted (day, month), and holds nothing, when it does not fit in
        what remains of any limit; a bound larger than a limit itself is refused as too large
        (`x-should-retry: false`: waiting cannot help). So concurrent requests never pass a
        limit together unless one uses more than its bound.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        now = self._now()
        counters = _counters(
            now, TOKEN_METERS, _subjects(project, key_id, project_policy, key_policy)
        )
        if not counters or tokens == 0:
            return TokenReservation(self, (), 0, (project, key_id, project_policy, key_policy))
        too_large = next((c for c in counters if tokens > c.limit), None)
        if too_large is not None:
            left = await self.storage.backend.get(too_large.key)
            raise too_large.refusal(now, asked=tokens, left=max(0, too_large.limit - left))
        await self._take(counters, now, tokens, tokens=True)
        return TokenReservation(
            self, tuple(counters), tokens, (project, key_id, project_policy, key_policy)
        )

    async def charge_training_job(
        self, project: str, key_id: int, project_policy: LimitPolicy, key_policy: LimitPolicy
    ) -> None:
        """Count one training job started today; raises QuotaExhausted (and counts nothing)
        when the project's or key's jobs of the day are used up."""
        now = self._now()
        subjects = _subjects(project, key_id, project_policy, key_policy)
        await self._take(_counters(now, (TRAINING_JOBS_PER_DAY,), subjects), now)

    async def close(self) -> None:
        await self.storage.close()

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    async def _settle(self, held: TokenReservation, used: int) -> None:
        """Replace a reservation by the tokens used: the difference goes to the counters
        that hold it while their period lasts; an extra charge after a period ended goes to
        the current one (charge_tokens), a refund to an ended period is dropped."""
        if not held.counters:
            await self.charge_tokens(*held.subject, used)
            return
        now = self._now()
        delta = used - held.tokens
        if delta == 0:
            return
        backend = self.storage.backend
        still_open = [c for c in held.counters if now < c.window.end]
        await asyncio.gather(*(backend.incr(c.key, c.expiry_s(now), delta) for c in still_open))
        if delta > 0 and len(still_open) < len(held.counters):
            held_keys = {c.key for c in held.counters}
            current = _counters(now, TOKEN_METERS, _subjects(*held.subject))
            late = [c for c in current if c.key not in held_keys]
            await asyncio.gather(*(backend.incr(c.key, c.expiry_s(now), delta) for c in late))

    async def _refuse_used_up(self, counters: Sequence[_Counter], now: datetime) -> list[int]:
        """Raise the first counter's refusal that has reached its limit; else the counts."""
        if not counters:
            return []
        used = await asyncio.gather(*(self.storage.backend.get(c.key) for c in counters))
        for counter, count in zip(counters, used, strict=True):
            if count >= counter.limit:
                raise counter.refusal(now)
        return list(used)

    async def _take(
        self, counters: Sequence[_Counter], now: datetime, amount: int = 1, *, tokens: bool = False
    ) -> list[int]:
        """Add `amount` to every counter, or, if that passes any limit, to none of them;
        returns the counters' new totals. `tokens`: the amount is a reservation of tokens.

        The increment is atomic per counter (so processes sharing a Redis never pass a limit
        together); a refusal takes its increments back, so that a key refused by its own limit
        does not use up its project's. A negative `incr` is that undo: both storages add it.
        Until it is undone, a refused increment holds its amount, so under contention at a
        limit a request may be refused a little early; none is ever admitted beyond a limit.
        """
        if not counters:
            return []
        backend = self.storage.backend
        totals = await asyncio.gather(
            *(backend.incr(c.key, c.expiry_s(now), amount) for c in counters)
        )
        over = [(c, total) for c, total in zip(counters, totals, strict=True) if total > c.limit]
        if over:
            await asyncio.gather(*(backend.incr(c.key, c.expiry_s(now), -amount) for c in counters))
            counter, total = over[0]
            if not tokens:
                raise counter.refusal(now)
            raise counter.refusal(now, asked=amount, left=max(0, counter.limit - total + amount))
        return list(totals)


@dataclass(slots=True)
class TokenReservation:
    """Tokens held against a caller's token limits while its request runs.

    `settle(used)` once, after the request: the held bound is replaced by `used` (a refund
    of the difference, or an extra charge where the bound was low). Settling again does
    nothing. A reservation that holds nothing (no token limit is set) charges `used` like
    `RateLimiter.charge_tokens`, which counts nothing either.
    """

    limiter: RateLimiter
    counters: tuple[_Counter, ...]
    tokens: int
    subject: tuple[str, int, LimitPolicy, LimitPolicy]  # project, key id, their policies
    settled: bool = False

    async def settle(self, used: int) -> None:
        if used < 0:
            raise ValueError(f"tokens must be >= 0, got {used}")
        if self.settled:
            return
        self.settled = True
        await self.limiter._settle(self, used)


def _subjects(
    project: str, key_id: int, project_policy: LimitPolicy, key_policy: LimitPolicy
) -> tuple[_Subject, _Subject]:
    # The key first: when both are refused, its own limit is the more specific answer.
    return (
        _Subject(f"key/{key_id}", "this API key", key_policy),
        _Subject(f"project/{project}", f"the project {project!r}", project_policy),
    )


def _counters(
    now: datetime, meters: Iterable[_Meter], subjects: Iterable[_Subject]
) -> list[_Counter]:
    """The counters the policies set, in the order meters, then subjects, are given."""
    counters = []
    for meter in meters:
        window = meter.period(now)
        for subject in subjects:
            limit = getattr(subject.policy, meter.field)
            if limit is not None:
                counters.append(_Counter(meter, subject, window, limit))
    return counters
