"""The web console's sessions over real HTTP: a session cookie acts as the key it was made from
and as nothing more; every change needs the session's CSRF token; sign-out and revoking the key
end it on the server. (In a browser: tests/e2e; over TLS the cookie is Secure: test_tls.py.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.integration.conftest import RunningServer

COOKIE = "openmaas_session"


def create_key(server: RunningServer, name: str, *scopes: str) -> tuple[int, str]:
    response = httpx.post(
        f"{server.url}/v1/keys",
        json={"name": name, "scopes": list(scopes)},
        headers=server.headers,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["key"]


@contextmanager
def signed_in(server: RunningServer, key: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a session cookie of `key`, and the session's CSRF token (read from a
    page, as the console's scripts read it)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/ui/session", json={"key": key})
        assert response.status_code == 200, response.text
        page = client.get("/ui/")
        assert page.status_code == 200
        found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert found is not None
        yield client, found.group(1)


@pytest.fixture(scope="module")
def admin_session(shared_server: RunningServer) -> Iterator[tuple[httpx.Client, str]]:
    with signed_in(shared_server, shared_server.key) as session:
        yield session


def test_the_cookie_is_httponly_samesite_and_expires(shared_server: RunningServer) -> None:
    response = httpx.post(f"{shared_server.url}/ui/session", json={"key": shared_server.key})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert shared_server.key not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= 480 * 60  # OPENMAAS_CONSOLE_SESSION_MINUTES' default


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/keys", {"name": "csrf", "scopes": ["inference"]}),
        ("PUT", "/v1/registry/models/absent/aliases/prod", {"version": 1}),
        ("PATCH", "/v1/registry/models/absent", {"description": "x"}),
        ("DELETE", "/v1/registry/models/absent", None),
        ("POST", "/v1/embeddings", {"model": "absent", "input": "x"}),
        ("POST", "/ui/session/end", None),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong"], ids=["no-token", "wrong-token"])
def test_every_change_needs_the_csrf_token(
    shared_server: RunningServer,
    admin_session: tuple[httpx.Client, str],
    method: str,
    path: str,
    body: dict[str, object] | None,
    token: str | None,
) -> None:
    client, _ = admin_session
    headers = {} if token is None else {"X-CSRF-Token": token}
    response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "csrf_token_invalid"
    assert client.get("/v1/models").status_code == 200  # the session lives on


def test_with_its_token_a_change_goes_through_as_the_key(
    shared_server: RunningServer, admin_session: tuple[httpx.Client, str]
) -> None:
    client, csrf = admin_session
    created = client.post(
        "/v1/keys",
        json={"name": "made-in-console", "scopes": ["inference"]},
        headers={"X-CSRF-Token": csrf},
    )
    assert created.status_code == 201, created.text
    admin_prefix = client.get("/v1/keys/self").json()["prefix"]
    assert created.json()["created_by"] == admin_prefix  # the audit names the key


def test_a_session_does_what_its_key_may_and_no_more(shared_server: RunningServer) -> None:
    _, key = create_key(shared_server, "reader", "models:read")
    with signed_in(shared_server, key) as (client, csrf):
        assert client.get("/v1/registry/models").status_code == 200
        listing = client.get("/v1/keys")
        assert listing.status_code == 403
        assert listing.json()["error"]["code"] == "insufficient_scope"
        made = client.post(
            "/v1/keys", json={"name": "x", "scopes": ["admin"]}, headers={"X-CSRF-Token": csrf}
        )
        assert made.status_code == 403
        page = client.get("/ui/keys")
        assert page.status_code == 403
        assert "admin" in page.text


def test_revoking_the_key_ends_its_sessions(shared_server: RunningServer) -> None:
    key_id, key = create_key(shared_server, "soon-revoked", "models:read")
    with signed_in(shared_server, key) as (client, _):
        assert client.get("/v1/registry/models").status_code == 200
        httpx.post(
            f"{shared_server.url}/v1/keys/{key_id}/revoke", headers=shared_server.headers
        ).raise_for_status()
        assert client.get("/v1/registry/models").status_code == 401
        page = client.get("/ui/")
        assert (page.status_code, page.headers["location"]) == (303, "/ui/sign-in")


def test_signing_out_ends_the_session_on_the_server(shared_server: RunningServer) -> None:
    with signed_in(shared_server, shared_server.key) as (client, csrf):
        token = client.cookies[COOKIE]
        ended = client.post("/ui/session/end", headers={"X-CSRF-Token": csrf})
        assert ended.status_code == 204
        assert COOKIE not in client.cookies
    replayed = httpx.get(f"{shared_server.url}/v1/models", cookies={COOKIE: token})
    assert replayed.status_code == 401


def test_sign_in_takes_json_from_this_origin_only(shared_server: RunningServer) -> None:
    url = f"{shared_server.url}/ui/session"
    form = httpx.post(url, data={"key": shared_server.key})
    assert form.status_code == 400
    foreign = httpx.post(
        url, json={"key": shared_server.key}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    wrong = httpx.post(url, json={"key": "om-nothing_at-all"})
    assert wrong.status_code == 401
    for refused in (form, foreign, wrong):
        assert "set-cookie" not in refused.headers
    long = httpx.post(url, json={"key": "k" * 10_000})
    assert long.status_code == 400
