"""Console sessions across server processes: two `openmaas serve` processes on one PostgreSQL
database accept the same session cookie; signing out in one, or revoking the key in one, ends
the session in both; expired sessions are swept from the table."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from openmaas.store.tables import ConsoleSessionRow
from tests.conftest import _reset_postgres
from tests.integration.conftest import RunningServer, running_servers

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

COOKIE = "openmaas_session"


@pytest.fixture(scope="module")
def two_servers(
    tmp_path_factory: pytest.TempPathFactory, pg_database_url: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two processes on one database and one home (so one key pepper), as behind a balancer."""
    _reset_postgres(pg_database_url)
    home = tmp_path_factory.mktemp("two-servers") / "home"
    with running_servers([home, home], {"OPENMAAS_DATABASE_URL": pg_database_url}) as servers:
        first, second = servers
        yield first, second


@pytest.fixture(scope="module")
def database(pg_database_url: str, two_servers: object) -> Iterator[Engine]:
    engine = create_engine(pg_database_url)
    yield engine
    engine.dispose()


def sign_in(server: RunningServer, key: str) -> tuple[str, str]:
    """The session cookie's token and the session's CSRF token (read from a page)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/ui/session", json={"key": key})
        assert response.status_code == 200, response.text
        page = client.get("/ui/")
        found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert found is not None
        return client.cookies[COOKIE], found.group(1)


def models(server: RunningServer, token: str) -> int:
    return httpx.get(f"{server.url}/v1/models", cookies={COOKIE: token}, timeout=30).status_code


def sessions_of(database: Engine, token: str) -> int:
    digest = hashlib.sha256(token.encode()).hexdigest()
    with database.connect() as connection:
        query = select(func.count()).where(ConsoleSessionRow.token_sha256 == digest)
        return int(connection.scalar(query) or 0)


def create_key(server: RunningServer, name: str) -> tuple[int, str]:
    response = httpx.post(
        f"{server.url}/v1/keys",
        json={"name": name, "scopes": ["inference", "models:read"]},
        headers=server.headers,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["key"]


def test_a_cookie_from_one_process_is_accepted_by_the_other_with_its_csrf_token(
    two_servers: tuple[RunningServer, RunningServer], database: Engine
) -> None:
    first, second = two_servers
    token, csrf = sign_in(first, first.key)
    assert sessions_of(database, token) == 1  # kept hashed: the token itself is not there
    assert models(second, token) == 200
    page = httpx.get(f"{second.url}/ui/keys", cookies={COOKIE: token}, timeout=30)
    assert page.status_code == 200
    assert f'content="{csrf}"' in page.text  # the same session, so the same CSRF token
    cookies = {COOKIE: token}
    refused = httpx.post(f"{second.url}/v1/keys", json={"name": "x"}, cookies=cookies)
    assert refused.status_code == 403
    made = httpx.post(
        f"{second.url}/v1/keys",
        json={"name": "made-on-the-second", "scopes": ["inference"]},
        cookies=cookies,
        headers={"X-CSRF-Token": csrf},
        timeout=30,
    )
    assert made.status_code == 201, made.text


def test_signing_out_in_one_process_ends_the_session_in_the_other(
    two_servers: tuple[RunningServer, RunningServer], database: Engine
) -> None:
    first, second = two_servers
    token, csrf = sign_in(first, first.key)
    assert models(second, token) == 200
    ended = httpx.post(
        f"{second.url}/ui/session/end", cookies={COOKIE: token}, headers={"X-CSRF-Token": csrf}
    )
    assert ended.status_code == 204
    assert sessions_of(database, token) == 0
    assert models(first, token) == 401
    page = httpx.get(f"{first.url}/ui/", cookies={COOKIE: token})
    assert (page.status_code, page.headers["location"]) == (303, "/ui/sign-in")


def test_revoking_the_key_in_one_process_ends_its_sessions_everywhere(
    two_servers: tuple[RunningServer, RunningServer], database: Engine
) -> None:
    first, second = two_servers
    key_id, key = create_key(first, "revoked-elsewhere")
    tokens = [sign_in(first, key)[0], sign_in(second, key)[0]]
    assert [models(server, t) for server in two_servers for t in tokens] == [200] * 4
    httpx.post(f"{second.url}/v1/keys/{key_id}/revoke", headers=second.headers).raise_for_status()
    assert [sessions_of(database, t) for t in tokens] == [0, 0]
    assert [models(server, t) for server in two_servers for t in tokens] == [401] * 4


def test_expired_sessions_are_refused_and_swept(
    two_servers: tuple[RunningServer, RunningServer], database: Engine
) -> None:
    first, second = two_servers
    key_id, key = create_key(first, "expiring")
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = [secrets.token_urlsafe(32) for _ in range(3)]
    with database.begin() as connection:
        for token in expired:
            connection.execute(
                ConsoleSessionRow.__table__.insert().values(
                    token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                    key_id=key_id,
                    project="default",
                    csrf_token="expired",
                    created_at=past - timedelta(hours=8),
                    expires_at=past,
                )
            )
    assert models(first, expired[0]) == 401  # presented: refused and deleted
    assert sessions_of(database, expired[0]) == 0
    assert [sessions_of(database, t) for t in expired[1:]] == [1, 1]
    live, _ = sign_in(second, key)  # a sign-in anywhere sweeps every expired row
    assert [sessions_of(database, t) for t in expired[1:]] == [0, 0]
    assert models(first, live) == 200
