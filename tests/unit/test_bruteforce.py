"""BruteForceGuard on both storages: this process's memory and the Redis at 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis

from openmaas.auth.bruteforce import BruteForceGuard
from openmaas.errors import TooManyAuthFailures

REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A namespace of this test's own on the Redis; its keys are deleted afterwards."""
    name = f"openmaas-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - the CI machine always has Redis
        pytest.fail(f"Redis at {REDIS_URL} is required for these tests: {exc}")
    yield name
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(storage URL, namespace) for each storage."""
    if request.param == "memory":
        return "", f"openmaas-test-{uuid.uuid4().hex[:12]}"
    namespace: str = request.getfixturevalue("redis_namespace")
    return REDIS_URL, namespace


@pytest_asyncio.fixture
async def guard(storage: tuple[str, str]) -> AsyncIterator[BruteForceGuard]:
    url, namespace = storage
    guard = BruteForceGuard(
        url,
        failures_before_delay=3,
        failures_before_block=8,
        block_s=300,
        namespace=namespace,
    )
    yield guard
    await guard.close()


@pytest.mark.asyncio
async def test_failures_are_slowed_then_refused(guard: BruteForceGuard) -> None:
    delays = []
    for _ in range(8):
        delays.append(await guard.failed(await guard.admit("203.0.113.7")))
    # Three free failures, then a doubling delay capped at 2 s.
    assert delays == [0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 2.0]

    with pytest.raises(TooManyAuthFailures) as caught:
        await guard.check("203.0.113.7")
    error = caught.value
    assert error.status_code == 429
    assert error.code == "too_many_auth_failures"
    assert 299 <= int(error.headers["Retry-After"]) <= 300
    assert f"wait {error.headers['Retry-After']} s before trying again" in error.message

    # Other addresses are not affected.
    await guard.check("203.0.113.8")
    assert await guard.failed(await guard.admit("2001:db8::1")) == 0.0


@pytest.mark.asyncio
async def test_a_block_ends_after_block_s(storage: tuple[str, str]) -> None:
    url, namespace = storage
    guard = BruteForceGuard(
        url, failures_before_delay=1, failures_before_block=2, block_s=1, namespace=namespace
    )
    try:
        await guard.failed(await guard.admit("198.51.100.1"))
        await guard.failed(await guard.admit("198.51.100.1"))
        with pytest.raises(TooManyAuthFailures) as caught:
            await guard.check("198.51.100.1")
        assert caught.value.headers["Retry-After"] == "1"
        await asyncio.sleep(1.05)
        await guard.check("198.51.100.1")
        # The failure window ended with the block: the count starts again.
        assert await guard.failed(await guard.admit("198.51.100.1")) == 0.0
    finally:
        await guard.close()


@pytest.mark.asyncio
async def test_guards_sharing_one_redis_share_the_count(redis_namespace: str) -> None:
    guards = [
        BruteForceGuard(
            REDIS_URL,
            failures_before_delay=2,
            failures_before_block=6,
            block_s=60,
            namespace=redis_namespace,
        )
        for _ in range(2)
    ]
    try:
        for attempt in range(6):
            guard = guards[attempt % 2]
            await guard.failed(await guard.admit("192.0.2.1"))
        for guard in guards:
            with pytest.raises(TooManyAuthFailures):
                await guard.check("192.0.2.1")
    finally:
        for guard in guards:
            await guard.close()


@pytest.mark.asyncio
async def test_concurrent_attempts_are_counted_before_any_is_verified(
    guard: BruteForceGuard,
) -> None:
    """200 attempts at once from a fresh address: only the first 8 (the block threshold) are
    admitted to verification; the rest are refused, however they interleave."""

    async def attempt() -> str:
        try:
            admitted = await guard.admit("192.0.2.50")
        except TooManyAuthFailures:
            return "refused"
        await asyncio.sleep(0)  # the verification: every other attempt runs meanwhile
        await guard.failed(admitted)
        return "verified"

    outcomes = await asyncio.gather(*(attempt() for _ in range(200)))
    assert outcomes.count("verified") == 8
    assert outcomes.count("refused") == 192
    with pytest.raises(TooManyAuthFailures):
        await guard.check("192.0.2.50")


@pytest.mark.asyncio
async def test_good_and_refused_attempts_give_their_count_back(guard: BruteForceGuard) -> None:
    for _ in range(20):  # good keys, many more than the threshold
        await guard.release(await guard.admit("192.0.2.60"))
    delays = [await guard.failed(await guard.admit("192.0.2.60")) for _ in range(4)]
    assert delays == [0.0, 0.0, 0.0, 0.25]  # counting from the first failure


@pytest.mark.asyncio
async def test_concurrent_attempts_across_two_guards_on_one_redis(redis_namespace: str) -> None:
    guards = [
        BruteForceGuard(
            REDIS_URL,
            failures_before_delay=5,
            failures_before_block=20,
            block_s=60,
            namespace=redis_namespace,
        )
        for _ in range(2)
    ]

    async def attempt(guard: BruteForceGuard) -> bool:
        try:
            admitted = await guard.admit("192.0.2.70")
        except TooManyAuthFailures:
            return False
        await guard.failed(admitted)
        return True

    try:
        verified = await asyncio.gather(*(attempt(guards[n % 2]) for n in range(200)))
        assert sum(verified) == 20
    finally:
        for guard in guards:
            await guard.close()


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        BruteForceGuard(block_s=0)
