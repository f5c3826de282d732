"""The auth service on SQLite and on the PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from openmaas.auth import DEFAULT_PROJECT, Principal, Scope
from openmaas.auth.entities import SYSTEM
from openmaas.auth.keys import format_key, generate_key, parse_key, pepper_fingerprint
from openmaas.auth.service import AuthService
from openmaas.errors import (
    ApiKeyNotFound,
    AuthenticationFailed,
    Conflict,
    InvalidName,
    InvalidRequest,
    PepperMismatch,
    ProjectNotFound,
)
from openmaas.store.database import Database
from openmaas.store.tables import ApiKeyRow, ServerCheckRow

pytestmark = pytest.mark.postgres

PEPPER = b"test-pepper-0123456789abcdef"
BOOTSTRAP_RACERS = 4


@pytest.fixture
def auth(database_url: str) -> Iterator[AuthService]:
    db = Database(database_url)
    db.migrate()
    yield AuthService(db, PEPPER)
    db.close()


def _failure(auth: AuthService, plaintext: str | None, now: datetime | None = None) -> str:
    with pytest.raises(AuthenticationFailed) as caught:
        auth.authenticate(plaintext, now)
    assert caught.value.status_code == 401
    assert caught.value.error_type == "authentication_error"
    assert caught.value.headers == {"WWW-Authenticate": "Bearer"}
    if plaintext:
        assert plaintext not in caught.value.message
    return caught.value.message


def test_projects_are_created_listed_and_unique(auth: AuthService) -> None:
    assert [p.name for p in auth.list_projects(caller=SYSTEM)] == [DEFAULT_PROJECT]
    created = auth.create_project("acme", "a customer", actor="alice", caller=SYSTEM)
    assert created.name == "acme"
    assert created.description == "a customer"
    assert created.created_by == "alice"
    now = datetime.now(UTC)
    assert now - timedelta(minutes=5) < created.created_at <= now
    assert auth.get_project("acme", caller=SYSTEM) == created
    assert [p.name for p in auth.list_projects(caller=SYSTEM)] == ["acme", DEFAULT_PROJECT]
    with pytest.raises(Conflict, match="already exists"):
        auth.create_project("acme", caller=SYSTEM)
    with pytest.raises(Conflict):
        auth.create_project(DEFAULT_PROJECT, caller=SYSTEM)
    with pytest.raises(InvalidName):
        auth.create_project("../etc", caller=SYSTEM)
    with pytest.raises(ProjectNotFound):
        auth.get_project("nobody", caller=SYSTEM)


def test_a_key_is_shown_once_and_authenticates(auth: AuthService) -> None:
    auth.create_project("acme", caller=SYSTEM)
    key, plaintext = auth.create_key(
        "acme", "ci", ["inference", Scope.MODELS_READ], actor="alice", caller=SYSTEM
    )
    assert parse_key(plaintext).prefix == key.prefix
    assert key.project == "acme"
    assert key.name == "ci"
    assert key.scopes == (Scope.INFERENCE, Scope.MODELS_READ)
    assert key.created_by == "alice"
    assert key.revoked_at is None
    assert key.expires_at is None
    assert key.last_used_at is None

    # Listings carry no secret and no hash, in any field.
    listed = auth.list_keys(caller=SYSTEM)
    assert listed == [key]
    assert auth.list_keys("acme", caller=SYSTEM) == [key]
    assert auth.list_keys(DEFAULT_PROJECT, caller=SYSTEM) == []
    assert {f.name for f in fields(listed[0])}.isdisjoint({"secret", "secret_hash", "salt"})
    assert parse_key(plaintext).secret not in repr(listed)
    with pytest.raises(ProjectNotFound):
        auth.list_keys("nobody", caller=SYSTEM)

    # The database holds neither the plaintext nor the secret.
    with auth.db.transaction() as session:
        row = session.scalars(select(ApiKeyRow)).one()
        stored = " ".join(str(getattr(row, c.key)) for c in ApiKeyRow.__table__.columns)
    assert parse_key(plaintext).secret not in stored

    principal = auth.authenticate(plaintext)
    assert principal == Principal(
        project="acme", key_id=key.id, prefix=key.prefix, scopes=key.scopes
    )
    assert auth.get_key(key.id, caller=SYSTEM).last_used_at is not None


def test_key_creation_is_validated(auth: AuthService) -> None:
    with pytest.raises(ProjectNotFound):
        auth.create_key("nobody", "k", [Scope.INFERENCE], caller=SYSTEM)
    with pytest.raises(InvalidRequest, match="unknown scope"):
        auth.create_key(DEFAULT_PROJECT, "k", ["root"], caller=SYSTEM)
    with pytest.raises(InvalidRequest, match="at least one scope"):
        auth.create_key(DEFAULT_PROJECT, "k", [], caller=SYSTEM)
    with pytest.raises(InvalidName):
        auth.create_key(DEFAULT_PROJECT, "", [Scope.INFERENCE], caller=SYSTEM)
    with pytest.raises(InvalidRequest, match="future"):
        auth.create_key(
            DEFAULT_PROJECT,
            "k",
            [Scope.INFERENCE],
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
            caller=SYSTEM,
        )
    assert auth.list_keys(caller=SYSTEM) == []


def test_unknown_and_wrong_secret_fail_alike(auth: AuthService) -> None:
    key, _ = auth.create_key(DEFAULT_PROJECT, "k", [Scope.INFERENCE], caller=SYSTEM)
    wrong_secret = format_key(key.prefix, generate_key().secret)
    unknown_prefix = generate_key().plaintext
    with pytest.raises(AuthenticationFailed) as wrong:
        auth.authenticate(wrong_secret)
    with pytest.raises(AuthenticationFailed) as unknown:
        auth.authenticate(unknown_prefix)
    assert wrong.value.message == unknown.value.message
    assert wrong.value.code == unknown.value.code == "invalid_api_key"
    assert _failure(auth, wrong_secret) == _failure(auth, unknown_prefix)
    assert auth.get_key(key.id, caller=SYSTEM).last_used_at is None


@pytest.mark.parametrize("presented", [None, ""])
def test_a_missing_key_fails(auth: AuthService, presented: str | None) -> None:
    assert "Authorization: Bearer" in _failure(auth, presented)


@pytest.mark.parametrize(
    "presented",
    ["Bearer om-abcd1234_" + "a" * 43, "om-abcd1234_short", "x" * 10_000, "om-" + "é" * 50],
)
def test_a_malformed_key_fails_with_the_reason(auth: AuthService, presented: str) -> None:
    assert _failure(auth, presented).startswith("malformed API key: ")


def test_a_revoked_key_fails_on_the_next_call(auth: AuthService) -> None:
    key, plaintext = auth.create_key(DEFAULT_PROJECT, "k", [Scope.INFERENCE], caller=SYSTEM)
    auth.authenticate(plaintext)
    revoked = auth.revoke_key(key.id, actor="bob", caller=SYSTEM)
    assert revoked.revoked_at is not None
    assert revoked.revoked_by == "bob"
    assert "revoked" in _failure(auth, plaintext)
    # Revoking again keeps the first revocation.
    assert auth.revoke_key(key.id, actor="carol", caller=SYSTEM) == revoked
    with pytest.raises(ApiKeyNotFound):
        auth.revoke_key(key.id + 1000, caller=SYSTEM)
    # A wrong secret on a revoked key still says only "invalid".
    assert _failure(auth, format_key(key.prefix, generate_key().secret)) == "invalid API key"


def test_an_expired_key_fails(auth: AuthService) -> None:
    now = datetime.now(UTC)
    expires = now + timedelta(hours=1)
    key, plaintext = auth.create_key(
        DEFAULT_PROJECT, "k", [Scope.TRAINING], expires_at=expires, caller=SYSTEM
    )
    assert key.expires_at == expires
    assert auth.authenticate(plaintext, now + timedelta(minutes=59)).key_id == key.id
    assert "expired" in _failure(auth, plaintext, expires)
    assert "expired" in _failure(auth, plaintext, now + timedelta(days=1))


def test_last_used_is_written_at_most_once_a_minute(auth: AuthService) -> None:
    key, plaintext = auth.create_key(DEFAULT_PROJECT, "k", [Scope.INFERENCE], caller=SYSTEM)
    start = datetime.now(UTC) + timedelta(seconds=1)
    auth.authenticate(plaintext, start)
    assert auth.get_key(key.id, caller=SYSTEM).last_used_at == start
    auth.authenticate(plaintext, start + timedelta(seconds=59))
    assert auth.get_key(key.id, caller=SYSTEM).last_used_at == start
    later = start + timedelta(seconds=60)
    auth.authenticate(plaintext, later)
    assert auth.get_key(key.id, caller=SYSTEM).last_used_at == later


def test_bootstrap_creates_one_admin_key_then_nothing(auth: AuthService) -> None:
    plaintext = auth.bootstrap_admin_key(caller=SYSTEM)
    assert plaintext is not None
    assert auth.bootstrap_admin_key(caller=SYSTEM) is None
    (key,) = auth.list_keys(caller=SYSTEM)
    assert key.project == DEFAULT_PROJECT
    assert key.scopes == (Scope.ADMIN,)
    principal = auth.authenticate(plaintext)
    assert principal.project == DEFAULT_PROJECT
    assert principal.scopes == (Scope.ADMIN,)


def test_bootstrap_imports_a_given_key(auth: AuthService) -> None:
    with pytest.raises(InvalidRequest, match="OPENMAAS_ADMIN_KEY") as caught:
        auth.bootstrap_admin_key("not-a-key-but-a-secret", caller=SYSTEM)
    assert "not-a-key-but-a-secret" not in caught.value.message
    assert auth.list_keys(caller=SYSTEM) == []

    given = generate_key().plaintext
    assert auth.bootstrap_admin_key(given, caller=SYSTEM) == given
    assert auth.authenticate(given).scopes == (Scope.ADMIN,)
    assert auth.bootstrap_admin_key(generate_key().plaintext, caller=SYSTEM) is None
    assert len(auth.list_keys(caller=SYSTEM)) == 1


def test_servers_starting_together_bootstrap_one_key(database_url: str) -> None:
    first = Database(database_url)
    first.migrate()
    first.close()
    services = [AuthService(Database(database_url), PEPPER) for _ in range(BOOTSTRAP_RACERS)]
    start = threading.Barrier(BOOTSTRAP_RACERS)

    def bootstrap(service: AuthService) -> str | None:
        start.wait()
        return service.bootstrap_admin_key(caller=SYSTEM)

    with ThreadPoolExecutor(BOOTSTRAP_RACERS) as pool:
        results = list(pool.map(bootstrap, services))
    created = [r for r in results if r is not None]
    assert len(created) == 1
    assert len(services[0].list_keys(caller=SYSTEM)) == 1
    for service in services:
        service.db.close()


def test_servers_starting_together_agree_on_one_pepper_and_refuse_another(
    database_url: str,
) -> None:
    """The first server's pepper fingerprint is recorded; a server with another pepper is
    refused at start, whichever of them started first, before or after."""
    first = Database(database_url)
    first.migrate()
    first.close()
    other = b"another-pepper-0123456789"
    peppers = [PEPPER, PEPPER, other, PEPPER]
    services = [AuthService(Database(database_url), pepper) for pepper in peppers]
    start = threading.Barrier(len(services))

    def check(service: AuthService) -> str:
        start.wait()
        try:
            service.check_pepper()
        except PepperMismatch as exc:
            return exc.message
        return "passed"

    with ThreadPoolExecutor(len(services)) as pool:
        answers = list(pool.map(check, services))
    passed = [answer == "passed" for answer in answers]
    assert passed in ([True, True, False, True], [False, False, True, False])
    assert all("OPENMAAS_KEY_PEPPER" in a for a in answers if a != "passed")
    recorded = PEPPER if passed[0] else other
    with services[0].db.transaction() as session:
        (row,) = session.scalars(select(ServerCheckRow)).all()
    assert row.value == pepper_fingerprint(recorded)
    assert PEPPER.hex() not in row.value  # not the pepper itself
    assert other.hex() not in row.value
    for service, pepper in zip(services, peppers, strict=True):
        if pepper == recorded:
            service.check_pepper()  # a restart
        else:
            with pytest.raises(PepperMismatch):
                service.check_pepper()
        service.db.close()


def test_bootstrap_does_nothing_when_keys_exist(auth: AuthService) -> None:
    auth.create_project("acme", caller=SYSTEM)
    auth.create_key("acme", "k", [Scope.INFERENCE], caller=SYSTEM)
    assert auth.bootstrap_admin_key(caller=SYSTEM) is None
    assert [k.scopes for k in auth.list_keys(caller=SYSTEM)] == [(Scope.INFERENCE,)]
