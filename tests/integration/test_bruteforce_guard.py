"""The brute-force guard against real servers: concurrent wrong keys, X-Forwarded-For from
trusted and untrusted peers, and the operator's choice for valid keys from a blocked address.

How many keys were verified is read from the server's own counter,
`openmaas_auth_attempts_total{outcome=...}` on /metrics. The attacking address is an
X-Forwarded-For address (the servers trust 127.0.0.1 as a proxy) so that 127.0.0.1 itself is
never blocked, on a Redis other test servers share.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from openmaas import Client
from openmaas.auth.keys import generate_key
from tests.integration.conftest import RunningServer, start_server, stop_server

REDIS_URL = "redis://127.0.0.1:6379/0"
THRESHOLD = 20  # the default OPENMAAS_AUTH_FAILURES_BEFORE_BLOCK
ATTACKERS = 200


def bearer(key: str, forwarded_for: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return headers


def fresh_address() -> str:
    """A documentation address (RFC 3849) no other test or run uses."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def attempts(server: RunningServer, outcome: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=server.headers).text
    found = re.search(rf'^openmaas_auth_attempts_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def models(server: RunningServer, key: str, forwarded_for: str | None = None) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/models", headers=bearer(key, forwarded_for))


@pytest.fixture(scope="module")
def trusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with the default guard that trusts 127.0.0.1 as a proxy: each test attacks
    from fresh addresses of its own, so the tests that use it do not meet each other's
    blocks."""
    server = start_server(
        tmp_path_factory.mktemp("trusting") / "home", {"OPENMAAS_TRUSTED_PROXIES": "127.0.0.1"}
    )
    yield server
    stop_server(server)


@pytest.fixture
def redis_keys() -> Iterator[list[str]]:
    """Addresses whose guard counters are removed from the shared Redis afterwards."""
    addresses: list[str] = []
    yield addresses
    client = redis.Redis.from_url(REDIS_URL)
    for address in addresses:
        for key in client.scan_iter(f"*auth_*/{address}"):
            client.delete(key)
    client.close()


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_concurrent_wrong_keys_are_verified_at_most_threshold_times(
    tmp_path: Path, storage: str, redis_keys: list[str], request: pytest.FixtureRequest
) -> None:
    """The audit's finding: 200 concurrent wrong keys from a fresh address were all verified
    (threshold 20): the block was checked before any failure was counted."""
    if storage == "redis":
        env = {"OPENMAAS_TRUSTED_PROXIES": "127.0.0.1", "OPENMAAS_REDIS_URL": REDIS_URL}
        server = start_server(tmp_path / "home", env)
    else:
        server = request.getfixturevalue("trusting")
    attacker = fresh_address()
    redis_keys.append(attacker)
    try:
        invalid_before = attempts(server, "invalid")

        async def attack() -> list[int]:
            limits = httpx.Limits(max_connections=ATTACKERS)
            async with httpx.AsyncClient(limits=limits, timeout=60) as client:
                answers = await asyncio.gather(
                    *(
                        client.post(
                            f"{server.url}/v1/embeddings",
                            json={"model": "m", "input": "x"},
                            headers=bearer(generate_key().plaintext, attacker),
                        )
                        for _ in range(ATTACKERS)
                    )
                )
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(attack())
        verified = attempts(server, "invalid") - invalid_before
        assert verified == THRESHOLD, statuses
        assert statuses.count(401) == THRESHOLD
        assert statuses.count(429) == ATTACKERS - THRESHOLD
        assert attempts(server, "refused") >= ATTACKERS - THRESHOLD
        # The address stays refused; this server's own address was never touched.
        assert models(server, generate_key().plaintext, attacker).status_code == 429
        assert models(server, server.key).status_code == 200
    finally:
        if storage == "redis":
            stop_server(server)


def test_a_burst_with_one_key_is_one_attempt(trusting: RunningServer) -> None:
    """Concurrent requests with one key share its verification and count as one attempt: a
    client opening 200 connections with its new (not yet cached) key is served, not blocked
    as a guesser (found by the embeddings benchmark: 64 clients sharing a good key answered
    429 for 300 s), and 200 requests with one wrong key are checked a few times, not 200."""
    server = trusting
    client_address, guesser = fresh_address(), fresh_address()
    good = _new_key(server)
    wrong = generate_key().plaintext
    invalid_before = attempts(server, "invalid")

    async def burst(key: str, address: str) -> list[int]:
        limits = httpx.Limits(max_connections=ATTACKERS)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            answers = await asyncio.gather(
                *(
                    client.get(f"{server.url}/v1/models", headers=bearer(key, address))
                    for _ in range(ATTACKERS)
                )
            )
        return [answer.status_code for answer in answers]

    assert asyncio.run(burst(good, client_address)) == [200] * ATTACKERS
    # Not blocked (under THRESHOLD checks): requests that arrive while the key is being
    # checked share that check; a failure is not cached, so a later wave checks again.
    assert asyncio.run(burst(wrong, guesser)) == [401] * ATTACKERS
    assert 1 <= attempts(server, "invalid") - invalid_before < THRESHOLD
    assert models(server, good, client_address).status_code == 200


def _blocking_server(tmp_path: Path, **env: str) -> RunningServer:
    tmp_path.mkdir(exist_ok=True)
    return start_server(
        tmp_path / "home",
        {
            "OPENMAAS_AUTH_FAILURES_BEFORE_DELAY": "10",
            "OPENMAAS_AUTH_FAILURES_BEFORE_BLOCK": "3",
            "OPENMAAS_AUTH_BLOCK_S": "60",
            **env,
        },
    )


def _new_key(server: RunningServer) -> str:
    with Client(server.url, api_key=server.key) as admin:
        return admin.create_key(f"k-{uuid.uuid4().hex[:6]}", ["inference"]).key


def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    """No trusted proxies (the default): a guesser cannot dodge the block by sending a new
    X-Forwarded-For with every attempt."""
    server = _blocking_server(tmp_path)
    try:
        fresh = _new_key(server)  # made before 127.0.0.1 is blocked; never used, so not cached
        spoofed = [models(server, generate_key().plaintext, fresh_address()) for _ in range(3)]
        assert [answer.status_code for answer in spoofed] == [401, 401, 401]
        blocked = models(server, generate_key().plaintext, fresh_address())
        assert blocked.status_code == 429
        assert blocked.json()["error"]["code"] == "too_many_auth_failures"
        # The block is on the socket's address, 127.0.0.1, valid keys included (the default).
        assert models(server, fresh, fresh_address()).status_code == 429
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def blocking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A quick-blocking server behind trusted proxies (valid keys from a blocked address
    refused, the default); the tests that use it block fresh addresses of their own."""
    server = _blocking_server(
        tmp_path_factory.mktemp("blocking"), OPENMAAS_TRUSTED_PROXIES="127.0.0.1,10.0.0.0/8"
    )
    yield server
    stop_server(server)


def test_forwarded_for_from_a_trusted_proxy_is_honoured(blocking: RunningServer) -> None:
    server = blocking
    fresh = _new_key(server)
    guesser, neighbour = fresh_address(), fresh_address()
    answers = [models(server, generate_key().plaintext, guesser) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [401, 401, 401]
    assert models(server, generate_key().plaintext, guesser).status_code == 429
    # Hops left of the first untrusted one are the client's own words: prepending a fresh
    # address does not help; a trusted hop to its right (10.0.0.7) is skipped.
    chain = f"{fresh_address()}, {guesser}, 10.0.0.7"
    assert models(server, generate_key().plaintext, chain).status_code == 429
    # Another client behind the same proxy is not affected.
    assert models(server, generate_key().plaintext, neighbour).status_code == 401
    assert models(server, fresh, neighbour).status_code == 200


def test_a_valid_key_from_a_blocked_address_by_default_and_when_admitted(
    tmp_path: Path, blocking: RunningServer
) -> None:
    admitting = _blocking_server(
        tmp_path,
        OPENMAAS_TRUSTED_PROXIES="127.0.0.1",
        OPENMAAS_AUTH_ADMIT_VALID_KEYS_WHEN_BLOCKED="true",
    )
    for server, expected in ((blocking, 429), (admitting, 200)):
        try:
            fresh = _new_key(server)  # not yet used: not in the key cache
            blocked = fresh_address()
            for _ in range(3):
                models(server, generate_key().plaintext, blocked)
            assert models(server, generate_key().plaintext, blocked).status_code == 429
            assert models(server, fresh, blocked).status_code == expected, server.env.get(
                "OPENMAAS_AUTH_ADMIT_VALID_KEYS_WHEN_BLOCKED"
            )
            # A wrong key from the blocked address stays refused either way.
            assert models(server, generate_key().plaintext, blocked).status_code == 429
        finally:
            if server is admitting:
                stop_server(server)


def test_a_malformed_trusted_proxy_stops_the_server(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="server exited"):
        start_server(tmp_path / "home", {"OPENMAAS_TRUSTED_PROXIES": "10.0.0.0/33"})
