"""Every entry point of the auth, dataset and metering services that reads or changes tenant
data refuses a call without an explicit caller (fail closed), and changes nothing."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openmaas.auth.entities import DEFAULT_PROJECT, SYSTEM
from openmaas.auth.scopes import Scope
from openmaas.auth.service import AuthService
from openmaas.datasets.service import DatasetService
from openmaas.errors import MissingCaller, PermissionDenied, ProjectNotFound
from openmaas.metering.audit import AuditLog
from openmaas.metering.usage import UsageRecord, UsageRecorder
from openmaas.registry.artifacts import ArtifactStore
from openmaas.store.database import Database
from tests.factories import member

PEPPER = b"test-pepper-0123456789abcdef"
CSV = "text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40))
END = datetime.now(UTC) + timedelta(days=1)
START = END - timedelta(days=30)

Call = Callable[[Any], object]  # one entry point, called with the given caller


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'openmaas.db'}")
    db.migrate()
    yield db
    db.close()


@pytest.fixture
def auth(database: Database) -> AuthService:
    return AuthService(database, PEPPER)


@pytest.fixture
def datasets(database: Database, tmp_path: Path) -> DatasetService:
    store = ArtifactStore(tmp_path / "artifacts")
    store.start()
    service = DatasetService(database, store)
    service.start()
    return service


@pytest.fixture
def usage(database: Database) -> Iterator[UsageRecorder]:
    recorder = UsageRecorder(database, flush_s=3600.0)
    yield recorder
    recorder.close()


def refused(call: Call) -> MissingCaller:
    with pytest.raises(MissingCaller) as caught:
        call(None)
    assert (caught.value.status_code, caught.value.code) == (403, "missing_caller")
    return caught.value


# -- auth -----------------------------------------------------------------------------------


def auth_calls(auth: AuthService, key_id: int) -> dict[str, Call]:
    return {
        "create_project": lambda who: auth.create_project("acme", caller=who),
        "list_projects": lambda who: auth.list_projects(caller=who),
        "get_project": lambda who: auth.get_project(DEFAULT_PROJECT, caller=who),
        "set_project_limits": lambda who: auth.set_project_limits(
            DEFAULT_PROJECT, {"requests_per_minute": 1}, caller=who
        ),
        "create_key": lambda who: auth.create_key(
            DEFAULT_PROJECT, "k", [Scope.INFERENCE], caller=who
        ),
        "list_keys": lambda who: auth.list_keys(caller=who),
        "get_key": lambda who: auth.get_key(key_id, caller=who),
        "revoke_key": lambda who: auth.revoke_key(key_id, caller=who),
        "set_key_limits": lambda who: auth.set_key_limits(
            key_id, {"requests_per_minute": 1}, caller=who
        ),
        "bootstrap_admin_key": lambda who: auth.bootstrap_admin_key(caller=who),
    }


def test_every_auth_entry_point_refuses_a_missing_caller_and_changes_nothing(
    auth: AuthService,
) -> None:
    key, _ = auth.create_key(DEFAULT_PROJECT, "existing", [Scope.INFERENCE], caller=SYSTEM)
    calls = auth_calls(auth, key.id)
    assert set(calls) == {
        "create_project",
        "list_projects",
        "get_project",
        "set_project_limits",
        "create_key",
        "list_keys",
        "get_key",
        "revoke_key",
        "set_key_limits",
        "bootstrap_admin_key",
    }
    for call in calls.values():
        refused(call)
    assert [p.name for p in auth.list_projects(caller=SYSTEM)] == [DEFAULT_PROJECT]
    assert auth.get_project(DEFAULT_PROJECT, caller=SYSTEM).limits == {}
    assert auth.list_keys(caller=SYSTEM) == [key]


def test_only_admins_manage_projects_and_keys(auth: AuthService) -> None:
    key, _ = auth.create_key(DEFAULT_PROJECT, "existing", [Scope.INFERENCE], caller=SYSTEM)
    tenant = member(DEFAULT_PROJECT, Scope.MODELS_WRITE, Scope.TRAINING, Scope.INFERENCE)
    for call in auth_calls(auth, key.id).values():
        with pytest.raises(PermissionDenied) as caught:
            call(tenant)
        assert caught.value.code == "insufficient_scope"
    assert auth.get_key(key.id, caller=member("x", Scope.ADMIN)).revoked_at is None


def test_authenticate_needs_no_caller(auth: AuthService) -> None:
    _, plaintext = auth.create_key(DEFAULT_PROJECT, "k", [Scope.INFERENCE], caller=SYSTEM)
    assert auth.authenticate(plaintext).project == DEFAULT_PROJECT


# -- datasets -------------------------------------------------------------------------------


def test_every_dataset_entry_point_refuses_a_missing_caller(datasets: DatasetService) -> None:
    dataset = datasets.create(
        io.BytesIO(CSV.encode()), filename="a.csv", project="acme", caller=member("acme")
    )
    calls: dict[str, Call] = {
        "create": lambda who: datasets.create(
            io.BytesIO(CSV.encode()), filename="b.csv", project="acme", caller=who
        ),
        "get": lambda who: datasets.get(dataset.id, caller=who),
        "list": lambda who: datasets.list(caller=who),
        "content": lambda who: datasets.content(dataset.id, caller=who),
        "load": lambda who: datasets.load(dataset.id, caller=who),
        "splits": lambda who: datasets.splits(dataset.id, caller=who),
        "delete": lambda who: datasets.delete(dataset.id, caller=who),
    }
    for call in calls.values():
        refused(call)
    assert [d.id for d in datasets.list(caller=SYSTEM)] == [dataset.id]
    assert [entry.name for entry in datasets.root.iterdir()] == [dataset.id]


def test_a_caller_adds_files_to_its_own_project_only(datasets: DatasetService) -> None:
    with pytest.raises(PermissionDenied) as caught:
        datasets.create(
            io.BytesIO(CSV.encode()), filename="a.csv", project="other", caller=member("acme")
        )
    assert caught.value.param == "project"
    assert datasets.list(caller=SYSTEM) == []
    made = datasets.create(io.BytesIO(CSV.encode()), filename="a.csv", project="x", caller=SYSTEM)
    assert made.project == "x"  # admins (and the server itself) may name any project


# -- metering -------------------------------------------------------------------------------


def test_every_usage_query_refuses_a_missing_caller(usage: UsageRecorder) -> None:
    calls: dict[str, Call] = {
        "query": lambda who: usage.query(START, END, caller=who),
        "export_csv": lambda who: usage.export_csv(START, END, {}, caller=who),
        "visible_project": lambda who: usage.visible_project(None, caller=who),
    }
    for call in calls.values():
        refused(call)


def test_usage_answers_for_the_callers_project_only(usage: UsageRecorder) -> None:
    for project in ("acme", "acme", "beta"):
        usage.record(
            UsageRecord(project=project, route="/v1/embeddings", latency_ms=1.0, status=200)
        )
    usage.flush()

    def requests(caller: Any, project: str | None = None) -> int:
        (total,) = usage.query(START, END, project, group_by=(), caller=caller)
        return total.requests

    assert requests(member("acme")) == 2
    assert requests(member("acme"), "acme") == 2
    assert requests(SYSTEM) == 3
    assert requests(SYSTEM, "beta") == 1
    with pytest.raises(ProjectNotFound):
        requests(member("acme"), "beta")
    assert usage.visible_project(None, caller=member("acme")) == "acme"
    assert usage.visible_project(None, caller=SYSTEM) is None
    with pytest.raises(ProjectNotFound):
        usage.visible_project("never", caller=SYSTEM)


def test_the_audit_log_is_read_by_admins_only(database: Database) -> None:
    audit = AuditLog(database)
    audit.record("om-a", "acme", "key.create", "keys/1")  # the server's own work: no caller
    refused(lambda who: audit.query(caller=who))
    with pytest.raises(PermissionDenied):
        audit.query(caller=member("acme", Scope.TRAINING, Scope.MODELS_WRITE))
    assert [e.target for e in audit.query(caller=SYSTEM)] == ["keys/1"]
