"""RateLimiter on both storages: this process's memory and the Redis at 127.0.0.1:6379.

Calendar periods follow an injected clock, so no test waits for a minute or a day to pass.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import redis
from limits.errors import StorageError

from openmaas.auth.policy import LimitPolicy
from openmaas.auth.ratelimit import CounterStorage, RateLimiter, RateLimitStatus
from openmaas.errors import QuotaExhausted, RateLimited

REDIS_URL = "redis://127.0.0.1:6379"
UNLIMITED = LimitPolicy()


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "memory" else REDIS_URL


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A namespace of this test's own on the Redis; its keys (and those of namespaces
    starting with it) are deleted afterwards."""
    name = f"openmaas-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - the CI machine always has Redis
        pytest.fail(f"Redis at {REDIS_URL} is required for these tests: {exc}")
    yield name
    keys = list(client.scan_iter(f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, storage_url: str) -> str:
    if not storage_url:
        return f"openmaas-test-{uuid.uuid4().hex[:12]}"
    name: str = request.getfixturevalue("redis_namespace")
    return name


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 23, 10, 15, 20, tzinfo=UTC))


@pytest_asyncio.fixture
async def limiter(storage_url: str, namespace: str, clock: FakeClock) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(storage_url, namespace=namespace, clock=clock)
    yield limiter
    await limiter.close()


async def refused(call: object) -> Exception:
    """The exception an awaitable raises (failing the test when it raises none)."""
    assert asyncio.iscoroutine(call)
    try:
        await call
    except Exception as exc:
        return exc
    pytest.fail("expected a refusal")


@pytest.mark.asyncio
async def test_requests_per_minute_refuses_with_retry_after_until_the_minute_ends(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    project = LimitPolicy(requests_per_minute=3)
    for _ in range(3):
        await limiter.check_request("acme", 1, project, UNLIMITED)

    error = await refused(limiter.check_request("acme", 1, project, UNLIMITED))
    assert isinstance(error, RateLimited)
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    # 10:15:20 -> 10:16:00; and OpenAI's headers for the limit reached.
    assert error.headers == {
        "Retry-After": "40",
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "40s",
    }
    assert "the project 'acme' is limited to 3 requests per minute" in error.message

    clock.advance(seconds=40)
    await limiter.check_request("acme", 1, project, UNLIMITED)


@pytest.mark.asyncio
async def test_a_project_limit_is_shared_by_its_keys(limiter: RateLimiter) -> None:
    project = LimitPolicy(requests_per_minute=4)
    for key_id in (1, 1, 2, 2):
        await limiter.check_request("acme", key_id, project, UNLIMITED)
    for key_id in (1, 2, 3):
        error = await refused(limiter.check_request("acme", key_id, project, UNLIMITED))
        assert isinstance(error, RateLimited)
        assert "the project 'acme'" in error.message
    # Another project has its own counters.
    await limiter.check_request("other", 9, project, UNLIMITED)


@pytest.mark.asyncio
async def test_a_key_override_tighter_than_the_project_binds_that_key_alone(
    limiter: RateLimiter,
) -> None:
    project = LimitPolicy(requests_per_minute=10)
    tight = LimitPolicy(requests_per_minute=2)
    for _ in range(2):
        await limiter.check_request("acme", 1, project, tight)
    for _ in range(5):
        error = await refused(limiter.check_request("acme", 1, project, tight))
        assert isinstance(error, RateLimited)
        assert "this API key is limited to 2 requests per minute" in error.message

    # The refused requests did not use up the project's: 8 of 10 remain for key 2.
    for _ in range(8):
        await limiter.check_request("acme", 2, project, UNLIMITED)
    error = await refused(limiter.check_request("acme", 2, project, UNLIMITED))
    assert "the project 'acme' is limited to 10 requests per minute" in str(error)


@pytest.mark.asyncio
async def test_a_key_override_looser_than_the_project_stays_within_the_project(
    limiter: RateLimiter,
) -> None:
    project = LimitPolicy(requests_per_minute=2)
    loose = LimitPolicy(requests_per_minute=100)
    await limiter.check_request("acme", 1, project, loose)
    await limiter.check_request("acme", 1, project, loose)
    error = await refused(limiter.check_request("acme", 1, project, loose))
    assert "the project 'acme' is limited to 2 requests per minute" in str(error)


@pytest.mark.asyncio
async def test_daily_token_quota_names_itself_and_its_exact_reset(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 11, 23, 23, 59, 30, tzinfo=UTC)
    project = LimitPolicy(tokens_per_day=100_000)
    await limiter.check_request("acme", 1, project, UNLIMITED)
    await limiter.charge_tokens("acme", 1, project, UNLIMITED, 60_000)
    await limiter.check_request("acme", 2, project, UNLIMITED)
    # The request that crosses the quota is served in full...
    await limiter.charge_tokens("acme", 2, project, UNLIMITED, 50_000)

    # ...and the next one, from any key of the project, is refused.
    error = await refused(limiter.check_request("acme", 3, project, UNLIMITED))
    assert isinstance(error, QuotaExhausted)
    assert error.status_code == 429
    assert error.code == "quota_exceeded"
    assert error.message == (
        "the project 'acme' has used its 100000 tokens for today; "
        "the quota resets at 2026-11-24T00:00:00Z"
    )
    assert error.headers == {"Retry-After": "30", "x-should-retry": "false"}

    clock.advance(seconds=30)
    await limiter.check_request("acme", 3, project, UNLIMITED)


@pytest.mark.asyncio
async def test_monthly_token_quota_of_a_key_resets_on_the_first_of_the_month(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    key = LimitPolicy(tokens_per_month=1000)
    await limiter.charge_tokens("acme", 1, UNLIMITED, key, 1000)

    error = await refused(limiter.check_request("acme", 1, UNLIMITED, key))
    assert isinstance(error, QuotaExhausted)
    assert error.message == (
        "this API key has used its 1000 tokens for this month; "
        "the quota resets at 2027-01-01T00:00:00Z"
    )
    assert error.headers["Retry-After"] == str(12 * 3600)
    # Other keys of the project are not bound by this key's quota.
    await limiter.check_request("acme", 2, UNLIMITED, UNLIMITED)

    clock.now = datetime(2027, 1, 1, tzinfo=UTC)
    await limiter.check_request("acme", 1, UNLIMITED, key)


@pytest.mark.asyncio
async def test_tokens_per_minute_is_a_rate_limit(limiter: RateLimiter, clock: FakeClock) -> None:
    project = LimitPolicy(tokens_per_minute=500)
    await limiter.charge_tokens("acme", 1, project, UNLIMITED, 499)
    await limiter.check_request("acme", 1, project, UNLIMITED)
    await limiter.charge_tokens("acme", 1, project, UNLIMITED, 1)

    error = await refused(limiter.check_request("acme", 1, project, UNLIMITED))
    assert isinstance(error, RateLimited)
    assert "the project 'acme' is limited to 500 tokens per minute" in error.message
    assert error.headers == {
        "Retry-After": "40",
        "x-ratelimit-limit-tokens": "500",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "40s",
    }

    clock.advance(minutes=1)
    await limiter.check_request("acme", 1, project, UNLIMITED)


@pytest.mark.asyncio
async def test_an_exhausted_quota_wins_over_a_rate_limit(limiter: RateLimiter) -> None:
    project = LimitPolicy(requests_per_minute=1, tokens_per_minute=10, tokens_per_day=10)
    await limiter.check_request("acme", 1, project, UNLIMITED)
    await limiter.charge_tokens("acme", 1, project, UNLIMITED, 10)
    # Retrying in a minute would not help: the answer must say so.
    error = await refused(limiter.check_request("acme", 1, project, UNLIMITED))
    assert isinstance(error, QuotaExhausted)


@pytest.mark.asyncio
async def test_training_jobs_per_day(limiter: RateLimiter, clock: FakeClock) -> None:
    project = LimitPolicy(training_jobs_per_day=3)
    key = LimitPolicy(training_jobs_per_day=1)
    await limiter.charge_training_job("acme", 1, project, key)
    for _ in range(3):
        error = await refused(limiter.charge_training_job("acme", 1, project, key))
        assert isinstance(error, QuotaExhausted)
        assert error.message == (
            "this API key has started its 1 training job for today; "
            "the quota resets at 2026-11-24T00:00:00Z"
        )
    # Key 1's refused attempts took none of the project's three.
    await limiter.charge_training_job("acme", 2, project, UNLIMITED)
    await limiter.charge_training_job("acme", 2, project, UNLIMITED)
    error = await refused(limiter.charge_training_job("acme", 2, project, UNLIMITED))
    assert "the project 'acme' has started its 3 training jobs for today" in str(error)

    clock.advance(days=1)
    await limiter.charge_training_job("acme", 1, project, key)


@pytest.mark.asyncio
async def test_a_zero_quota_refuses_from_the_start(limiter: RateLimiter) -> None:
    key = LimitPolicy(training_jobs_per_day=0)
    error = await refused(limiter.charge_training_job("acme", 1, UNLIMITED, key))
    assert isinstance(error, QuotaExhausted)
    assert error.message.startswith("this API key has a quota of 0 training jobs per day;")


@pytest.mark.asyncio
async def test_concurrent_requests_never_pass_the_limit(limiter: RateLimiter) -> None:
    project = LimitPolicy(requests_per_minute=10)
    calls = [limiter.check_request("acme", i % 3, project, UNLIMITED) for i in range(30)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(not isinstance(result, BaseException) for result in results) == 10
    assert all(isinstance(r, RateLimited) for r in results if isinstance(r, BaseException))

    # With a key's own counter too, a request one counter refuses holds a slot of the other
    # until it is taken back: contention may refuse early, never admit beyond a limit.
    key = LimitPolicy(requests_per_minute=3)
    calls = [limiter.check_request("busy", i % 2, project, key) for i in range(30)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(not isinstance(result, BaseException) for result in results) <= 6
    assert sum(not isinstance(result, BaseException) for result in results[::2]) <= 3


@pytest.mark.asyncio
async def test_no_limits_never_refuse(limiter: RateLimiter) -> None:
    for _ in range(50):
        await limiter.check_request("acme", 1, UNLIMITED, UNLIMITED)
        await limiter.charge_tokens("acme", 1, UNLIMITED, UNLIMITED, 10**9)
        await limiter.charge_training_job("acme", 1, UNLIMITED, UNLIMITED)


@pytest.mark.asyncio
async def test_negative_tokens_are_a_programming_error(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="tokens"):
        await limiter.charge_tokens("acme", 1, UNLIMITED, UNLIMITED, -1)


@pytest.mark.asyncio
async def test_two_limiters_sharing_one_redis_enforce_one_combined_limit(
    redis_namespace: str, clock: FakeClock
) -> None:
    namespace = redis_namespace
    first = RateLimiter(REDIS_URL, namespace=namespace, clock=clock)
    second = RateLimiter(REDIS_URL, namespace=namespace, clock=clock)
    stranger = RateLimiter(REDIS_URL, namespace=f"{namespace}-other", clock=clock)
    try:
        project = LimitPolicy(requests_per_minute=10, tokens_per_day=1000)
        calls = [
            (first if i % 2 else second).check_request("acme", i % 3, project, UNLIMITED)
            for i in range(25)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert sum(not isinstance(result, BaseException) for result in results) == 10
        for limiter in (first, second):
            error = await refused(limiter.check_request("acme", 1, project, UNLIMITED))
            assert isinstance(error, RateLimited)

        # Tokens charged through one process exhaust the quota seen by the other.
        await first.charge_tokens("acme", 1, project, UNLIMITED, 1000)
        clock.advance(minutes=1)
        error = await refused(second.check_request("acme", 2, project, UNLIMITED))
        assert isinstance(error, QuotaExhausted)

        # Another namespace on the same Redis (another installation) counts apart.
        await stranger.check_request("acme", 1, project, UNLIMITED)
    finally:
        await first.close()
        await second.close()
        await stranger.close()


@pytest.mark.asyncio
async def test_an_unreachable_redis_raises_storage_error() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1", timeout_s=0.5)
    try:
        with pytest.raises(StorageError):
            await limiter.check_request("acme", 1, LimitPolicy(requests_per_minute=1), UNLIMITED)
    finally:
        await limiter.close()


def test_only_redis_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="redis://"):
        CounterStorage("memcached://127.0.0.1:11211")
    assert CounterStorage(REDIS_URL).is_shared
    assert not CounterStorage("").is_shared


@pytest.mark.asyncio
async def test_a_checked_request_says_what_remains_of_the_minute(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    project = LimitPolicy(requests_per_minute=10, tokens_per_minute=1000)
    key = LimitPolicy(requests_per_minute=3)
    first = await limiter.check_request("acme", 1, project, key)
    assert first.requests is not None
    assert first.tokens is not None
    assert (first.requests.limit, first.requests.remaining) == (3, 2)  # the key's, tighter
    assert (first.tokens.limit, first.tokens.remaining) == (1000, 1000)
    await limiter.charge_tokens("acme", 1, project, key, 250)
    second = await limiter.check_request("acme", 1, project, key)
    assert second.requests is not None
    assert second.tokens is not None
    assert second.requests.remaining == 1
    assert second.tokens.remaining == 750
    assert 1 <= second.requests.reset_s <= 60
    assert dict(second.headers())[b"x-ratelimit-remaining-tokens"] == b"750"
    assert dict(second.headers())[b"x-ratelimit-reset-requests"].endswith(b"s")
    # No per-minute limit set: nothing to report.
    quota_only = await limiter.check_request("acme", 2, LimitPolicy(tokens_per_day=5), UNLIMITED)
    assert quota_only.requests is None
    assert quota_only.tokens is None
    assert quota_only.headers() == []


# -- reserve, then settle --------------------------------------------------------------------


def tokens_left(status: RateLimitStatus) -> int:
    assert status.tokens is not None
    return status.tokens.remaining


@pytest.mark.asyncio
async def test_a_reservation_that_does_not_fit_is_refused_and_holds_nothing(
    limiter: RateLimiter,
) -> None:
    """The audit's overshoot: one large request against tokens_per_minute=100 ran and was
    charged afterwards. Its reservation is now refused before it runs."""
    key = LimitPolicy(tokens_per_minute=100)
    error = await refused(limiter.reserve_tokens("acme", 1, UNLIMITED, key, 21_700))
    assert isinstance(error, RateLimited)
    assert error.status_code == 429
    assert "request too large" in error.message
    assert "21700 tokens" in error.message
    assert "100 tokens per minute" in error.message
    # Waiting cannot help; what remains is reported as it is.
    assert error.headers["x-should-retry"] == "false"
    assert error.headers["x-ratelimit-remaining-tokens"] == "100"
    assert 1 <= int(error.headers["Retry-After"]) <= 60

    # Nothing was held: the whole minute's 100 tokens are still there.
    held = await limiter.reserve_tokens("acme", 1, UNLIMITED, key, 100)
    error = await refused(limiter.reserve_tokens("acme", 1, UNLIMITED, key, 1))
    assert isinstance(error, RateLimited)
    assert "0 remain" in error.message
    assert "x-should-retry" not in error.headers
    await held.settle(100)


@pytest.mark.asyncio
async def test_settling_refunds_the_unused_part_and_charges_an_overrun(
    limiter: RateLimiter,
) -> None:
    project = LimitPolicy(tokens_per_minute=1000, tokens_per_day=5000)
    held = await limiter.reserve_tokens("acme", 1, project, UNLIMITED, 800)
    status = await limiter.check_request("acme", 1, project, UNLIMITED)
    assert tokens_left(status) == 200  # held while it runs
    await held.settle(30)
    status = await limiter.check_request("acme", 1, project, UNLIMITED)
    assert tokens_left(status) == 970
    await held.settle(0)  # a second settlement changes nothing
    status = await limiter.check_request("acme", 1, project, UNLIMITED)
    assert tokens_left(status) == 970

    # A bound that was low: the difference is charged too.
    low = await limiter.reserve_tokens("acme", 1, project, UNLIMITED, 10)
    await low.settle(70)
    status = await limiter.check_request("acme", 1, project, UNLIMITED)
    assert tokens_left(status) == 900


@pytest.mark.asyncio
async def test_a_daily_quota_refuses_a_reservation_that_would_pass_it(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 11, 23, 23, 59, 30, tzinfo=UTC)
    project = LimitPolicy(tokens_per_day=100)
    held = await limiter.reserve_tokens("acme", 1, project, UNLIMITED, 60)
    await held.settle(60)
    error = await refused(limiter.reserve_tokens("acme", 2, project, UNLIMITED, 50))
    assert isinstance(error, QuotaExhausted)
    assert error.message == (
        "the project 'acme' has 40 of its 100 tokens per day left today and this request may "
        "use up to 50 tokens (an upper bound from the size of its input, plus max_tokens "
        "where it generates); the quota resets at 2026-11-24T00:00:00Z"
    )
    held = await limiter.reserve_tokens("acme", 2, project, UNLIMITED, 40)
    await held.settle(40)


@pytest.mark.asyncio
async def test_concurrent_reservations_never_pass_a_token_limit(limiter: RateLimiter) -> None:
    project = LimitPolicy(tokens_per_minute=1000)
    key = LimitPolicy(tokens_per_minute=500)
    calls = [
        limiter.reserve_tokens("acme", i % 2, project, key if i % 2 else UNLIMITED, 120)
        for i in range(30)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    held = [r for r in results if not isinstance(r, BaseException)]
    assert 1 <= len(held) <= 1000 // 120
    assert sum(1 for r in results[1::2] if not isinstance(r, BaseException)) <= 500 // 120
    assert all(isinstance(r, RateLimited) for r in results if isinstance(r, BaseException))


@pytest.mark.asyncio
async def test_a_settlement_after_the_minute_ended_charges_only_the_overrun(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    project = LimitPolicy(tokens_per_minute=1000)
    refunded = await limiter.reserve_tokens("acme", 1, project, UNLIMITED, 500)
    overrun = await limiter.reserve_tokens("acme", 1, project, UNLIMITED, 100)
    clock.advance(minutes=1)
    await refunded.settle(10)  # the ended minute's refund is dropped
    await overrun.settle(300)  # 200 more than held: charged to the current minute
    status = await limiter.check_request("acme", 1, project, UNLIMITED)
    assert tokens_left(status) == 800


@pytest.mark.asyncio
async def test_without_token_limits_a_reservation_holds_nothing(limiter: RateLimiter) -> None:
    held = await limiter.reserve_tokens(
        "acme", 1, LimitPolicy(requests_per_minute=5), UNLIMITED, 10**9
    )
    assert held.counters == ()
    await held.settle(10**9)
    with pytest.raises(ValueError, match="tokens"):
        await limiter.reserve_tokens("acme", 1, UNLIMITED, UNLIMITED, -1)


@pytest.mark.asyncio
async def test_two_limiters_sharing_one_redis_hold_one_token_limit(
    redis_namespace: str, clock: FakeClock
) -> None:
    first = RateLimiter(REDIS_URL, namespace=redis_namespace, clock=clock)
    second = RateLimiter(REDIS_URL, namespace=redis_namespace, clock=clock)
    try:
        key = LimitPolicy(tokens_per_minute=1000)
        calls = [
            (first if i % 2 else second).reserve_tokens("acme", 1, UNLIMITED, key, 300)
            for i in range(10)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        held = [r for r in results if not isinstance(r, BaseException)]
        assert 1 <= len(held) <= 3
        # A refund through one process makes room seen by the other.
        for reservation in held:
            await reservation.settle(0)
        again = await first.reserve_tokens("acme", 1, UNLIMITED, key, 1000)
        await again.settle(1000)
        error = await refused(second.reserve_tokens("acme", 1, UNLIMITED, key, 1))
        assert isinstance(error, RateLimited)
    finally:
        await first.close()
        await second.close()
