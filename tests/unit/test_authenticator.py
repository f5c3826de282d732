"""The HTTP authenticator over a real auth service (SQLite): caching and shared reads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmaas.auth import DEFAULT_PROJECT, Principal
from openmaas.auth.entities import SYSTEM
from openmaas.auth.http import Authenticator
from openmaas.auth.service import AuthService
from openmaas.errors import AuthenticationFailed
from openmaas.store.database import Database

CALLERS = 32


class CountedReads(AuthService):
    """The real service, counting store reads; each read's answer waits at a gate the test
    opens, so every caller has arrived before the first read finishes."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, b"test-pepper-0123456789abcdef")
        self.reads = 0
        self.gate = threading.Event()
        self.read = threading.Event()  # a read has its answer (and waits at the gate)

    def authenticate(self, plaintext: str | None, now: object = None) -> Principal:
        self.reads += 1
        try:
            return super().authenticate(plaintext)
        finally:
            self.read.set()
            assert self.gate.wait(10), "test gate never opened"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CountedReads]:
    db = Database(f"sqlite:///{tmp_path / 'openmaas.db'}")
    db.migrate()
    yield CountedReads(db)
    db.close()


async def _all_waiting(authenticator: Authenticator, tasks: list[asyncio.Task[Principal]]) -> None:
    for _ in range(10_000):
        if all(not t.done() for t in tasks) and authenticator._verifying:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(0)
    raise AssertionError("the callers never all waited")


@pytest.mark.asyncio
async def test_concurrent_requests_with_one_key_share_one_store_read(
    service: CountedReads,
) -> None:
    _, plaintext = service.create_key(DEFAULT_PROJECT, "load", ["inference"], caller=SYSTEM)
    authenticator = Authenticator(service, ttl_s=60)
    tasks = [
        asyncio.create_task(authenticator.authenticate(plaintext, "10.0.0.1"))
        for _ in range(CALLERS)
    ]
    await _all_waiting(authenticator, tasks)
    service.gate.set()
    principals = await asyncio.gather(*tasks)
    assert service.reads == 1
    assert {p.key_id for p in principals} == {principals[0].key_id}
    # Cached now: no further read.
    await authenticator.authenticate(plaintext, "10.0.0.1")
    assert service.reads == 1


@pytest.mark.asyncio
async def test_a_shared_failed_read_fails_every_caller(service: CountedReads) -> None:
    _, plaintext = service.create_key(DEFAULT_PROJECT, "load", ["inference"], caller=SYSTEM)
    wrong = plaintext[:-4] + ("aaaa" if not plaintext.endswith("aaaa") else "bbbb")
    authenticator = Authenticator(service, ttl_s=60)
    tasks = [asyncio.create_task(authenticator.authenticate(wrong, "10.0.0.1")) for _ in range(8)]
    await _all_waiting(authenticator, tasks)
    service.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, AuthenticationFailed) for o in outcomes)
    assert service.reads == 1
    # A failure is never cached: the next attempt reads again.
    with pytest.raises(AuthenticationFailed):
        await authenticator.authenticate(wrong, "10.0.0.1")
    assert service.reads == 2


@pytest.mark.asyncio
async def test_a_revocation_during_a_read_keeps_its_result_out_of_the_cache(
    service: CountedReads,
) -> None:
    key, plaintext = service.create_key(DEFAULT_PROJECT, "load", ["inference"], caller=SYSTEM)
    authenticator = Authenticator(service, ttl_s=60)
    first = asyncio.create_task(authenticator.authenticate(plaintext, "10.0.0.1"))
    assert await asyncio.to_thread(service.read.wait, 10)
    service.revoke_key(key.id, caller=SYSTEM)
    authenticator.forget(key_id=key.id)  # what the admin route does after revoking
    service.gate.set()
    await first  # read before the revocation, it answers as the store did then
    with pytest.raises(AuthenticationFailed):
        await authenticator.authenticate(plaintext, "10.0.0.1")
    assert service.reads == 2
