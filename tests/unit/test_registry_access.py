"""Who may do what in the registry: every entry point refuses a missing caller, hidden
models are 'not found', another project's public model is read-only, admins see all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.errors import (
    Conflict,
    InvalidReference,
    MissingCaller,
    ModelNotFound,
    PermissionDenied,
)
from openmaas.registry.composition import Registry
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import SourceRef, plan_directory
from tests.factories import make_tarball, write_hf_model

TENANT_SCOPES = (Scope.INFERENCE, Scope.MODELS_READ, Scope.MODELS_WRITE)
ALICE = Principal(project="alpha", key_id=11, prefix="alice", scopes=TENANT_SCOPES)
BOB = Principal(project="beta", key_id=12, prefix="bob", scopes=TENANT_SCOPES)
ROOT = Principal(project="default", key_id=13, prefix="root", scopes=(Scope.ADMIN,))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_hf_model(tmp_path / "model")


def _entry_points(registry: Registry, model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """Each registry entry point, called with the caller given (the model 'm' exists)."""
    plan = plan_directory(model_dir)
    archive = make_tarball(model_dir, tmp_path / "m.tar.gz")
    store, aliases, files = registry.store, registry.aliases, registry.files
    calls: dict[str, Callable[[Any], object]] = {
        "store.list_models": lambda who: store.list_models(caller=who),
        "store.get_model": lambda who: store.get_model("m", caller=who),
        "store.set_public": lambda who: store.set_public("m", True, caller=who),
        "store.update_model": lambda who: store.update_model("m", description="x", caller=who),
        "store.delete_model": lambda who: store.delete_model("m", caller=who),
        "store.list_versions": lambda who: store.list_versions("m", caller=who),
        "store.get_version": lambda who: store.get_version("m", 1, caller=who),
        "store.update_version": lambda who: store.update_version(
            "m", 1, description="x", caller=who
        ),
        "store.delete_version": lambda who: store.delete_version("m", 1, caller=who),
        "store.metadata_history": lambda who: store.metadata_history("m", caller=who),
        "store.compare": lambda who: store.compare("m", 1, 1, caller=who),
        "aliases.resolve": lambda who: aliases.resolve("m", caller=who),
        "aliases.move": lambda who: aliases.move("m", "staging", 1, caller=who),
        "aliases.delete": lambda who: aliases.delete("m", "production", caller=who),
        "aliases.history": lambda who: aliases.history("m", caller=who),
        "aliases.rollback": lambda who: aliases.rollback("m", "production", caller=who),
        "registration.register_plan": lambda who: registry.registration.register_plan(
            "m", plan, VersionSpec(), caller=who
        ),
        "registration.register_archive": lambda who: registry.registration.register_archive(
            "m", archive, VersionSpec(), caller=who, source={"type": "upload"}
        ),
        "registration.register_source": lambda who: registry.registration.register_source(
            "m", SourceRef(type="path", path=str(model_dir)), VersionSpec(), caller=who
        ),
        "files.verify": lambda who: files.verify("m", 1, caller=who),
        "files.open": lambda who: files.open("m", caller=who),
        "files.open_stored": lambda who: files.open_stored("m", caller=who),
        "files.stored_versions": lambda who: files.stored_versions(caller=who),
        "resolve": lambda who: registry.resolve("m", caller=who),
        "get_model": lambda who: registry.get_model("m", caller=who),
        "get_version": lambda who: registry.get_version("m", 1, caller=who),
        "list_models": lambda who: registry.list_models(caller=who),
        "open_files": lambda who: registry.open_files("m", caller=who),
    }
    return calls


ENTRY_POINTS = (
    "store.list_models",
    "store.get_model",
    "store.set_public",
    "store.update_model",
    "store.delete_model",
    "store.list_versions",
    "store.get_version",
    "store.update_version",
    "store.delete_version",
    "store.metadata_history",
    "store.compare",
    "aliases.resolve",
    "aliases.move",
    "aliases.delete",
    "aliases.history",
    "aliases.rollback",
    "registration.register_plan",
    "registration.register_archive",
    "registration.register_source",
    "files.verify",
    "files.open",
    "files.open_stored",
    "files.stored_versions",
    "resolve",
    "get_model",
    "get_version",
    "list_models",
    "open_files",
)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_every_entry_point_refuses_a_missing_caller(
    registry: Registry, model_dir: Path, tmp_path: Path, entry_point: str
) -> None:
    registry.registration.register_plan(
        "m", plan_directory(model_dir), VersionSpec(alias="production"), caller=SYSTEM
    )
    calls = _entry_points(registry, model_dir, tmp_path)
    assert set(calls) == set(ENTRY_POINTS)
    with pytest.raises(MissingCaller) as refused:
        calls[entry_point](None)
    assert (refused.value.status_code, refused.value.code) == (403, "missing_caller")
    # Nothing changed: the model, its version and its alias are as they were.
    assert registry.resolve("m", caller=SYSTEM).version == 1
    assert len(registry.store.list_versions("m", caller=SYSTEM)) == 1


def _register(
    registry: Registry,
    model_dir: Path,
    name: str,
    who: Principal,
    *,
    public: bool = False,
    project: str | None = None,
) -> int:
    spec = VersionSpec(alias="production", public=public, project=project)
    return registry.registration.register_plan(
        name, plan_directory(model_dir), spec, caller=who
    ).version


def test_a_hidden_model_is_not_found_and_a_public_one_is_read_only(
    registry: Registry, model_dir: Path
) -> None:
    _register(registry, model_dir, "secret", ALICE)
    assert registry.get_model("secret", caller=ALICE).project == "alpha"
    assert registry.get_model("secret", caller=ROOT).project == "alpha"
    for call in (
        lambda: registry.get_model("secret", caller=BOB),
        lambda: registry.resolve("secret@production", caller=BOB),
        lambda: registry.store.list_versions("secret", caller=BOB),
        lambda: registry.aliases.history("secret", caller=BOB),
        lambda: registry.store.update_model("secret", description="mine", caller=BOB),
        lambda: registry.aliases.move("secret", "staging", 1, caller=BOB),
        lambda: registry.files.open("secret", caller=BOB),
        lambda: registry.files.verify("secret", 1, caller=BOB),
    ):
        with pytest.raises(ModelNotFound, match="model 'secret' not found"):
            call()
    assert [m.name for m in registry.list_models(caller=BOB)] == []
    assert [m.name for m in registry.list_models(caller=ALICE)] == ["secret"]

    registry.store.set_public("secret", True, caller=ROOT)
    assert registry.resolve("secret", caller=BOB).version == 1
    assert [m.name for m in registry.list_models(caller=BOB)] == ["secret"]
    # A public model is served to every project: read-only to every tenant, the project
    # that registered it included; only an admin changes it.
    changes: tuple[Callable[[Principal], object], ...] = (
        lambda who: registry.store.update_model("secret", description="mine", caller=who),
        lambda who: registry.store.update_version("secret", 1, tags={"a": "b"}, caller=who),
        lambda who: registry.store.delete_version("secret", 1, caller=who),
        lambda who: registry.store.delete_model("secret", caller=who),
        lambda who: registry.aliases.move("secret", "staging", 1, caller=who),
        lambda who: registry.aliases.delete("secret", "production", caller=who),
        lambda who: registry.aliases.rollback("secret", "production", caller=who),
        lambda who: registry.files.verify("secret", 1, caller=who),
        lambda who: _register(registry, model_dir, "secret", who),
    )
    for tenant in (BOB, ALICE):
        for change in changes:
            with pytest.raises(PermissionDenied) as refused:
                change(tenant)
            assert refused.value.code == "read_only_model"
            assert "only an admin key changes it" in refused.value.message
    assert registry.store.list_versions("secret", caller=ROOT)[-1].version == 1
    assert registry.files.verify("secret", 1, caller=ROOT).ok
    assert _register(registry, model_dir, "secret", ROOT) == 2


def test_each_project_has_its_own_names(registry: Registry, model_dir: Path) -> None:
    """Another project's hidden model of the same name is no obstacle and is never reached:
    registering it makes the caller's own model (the audit's 409 `name_taken` revealed that
    the hidden name existed)."""
    _register(registry, model_dir, "secret", ALICE)
    assert _register(registry, model_dir, "secret", BOB) == 1  # BOB's own, numbered from 1
    assert _register(registry, model_dir, "secret", BOB) == 2
    assert registry.store.list_versions("secret", caller=ALICE)[-1].version == 1
    assert registry.resolve("secret", caller=ALICE).project == "alpha"
    assert registry.resolve("secret", caller=BOB).project == "beta"
    # A project's qualified name reaches only what its caller may see.
    with pytest.raises(ModelNotFound):
        registry.resolve("alpha/secret", caller=BOB)
    # An admin sees both, so a bare name is ambiguous; `project/name` names one.
    with pytest.raises(InvalidReference) as ambiguous:
        registry.resolve("secret", caller=ROOT)
    assert "'alpha/secret', 'beta/secret'" in ambiguous.value.message
    assert registry.resolve("beta/secret:2", caller=ROOT).project == "beta"
    names = [(m.project, m.name) for m in registry.list_models(caller=ROOT)]
    assert names == [("alpha", "secret"), ("beta", "secret")]


def test_a_public_name_is_one_model(registry: Registry, model_dir: Path) -> None:
    """A bare name means the caller's own model, else the public one: a tenant cannot take a
    public model's name (403, it is visible), and a second public model of a name is refused."""
    _register(registry, model_dir, "shared", ROOT, public=True)
    with pytest.raises(PermissionDenied) as read_only:
        _register(registry, model_dir, "shared", ALICE)
    assert read_only.value.code == "read_only_model"
    _register(registry, model_dir, "shared", SYSTEM, project="beta")
    with pytest.raises(Conflict) as second:
        registry.store.set_public("beta/shared", True, caller=ROOT)
    assert second.value.code == "name_taken"
    assert registry.resolve("shared", caller=ALICE).project == "default"
    assert registry.resolve("shared", caller=BOB).project == "beta"  # its own comes first


def test_tenants_register_into_their_own_project_and_admins_anywhere(
    registry: Registry, model_dir: Path
) -> None:
    _register(registry, model_dir, "mine", BOB)
    assert registry.get_model("mine", caller=BOB).project == "beta"
    assert registry.get_version("mine", 1, caller=BOB).created_by == BOB.actor
    with pytest.raises(PermissionDenied):
        registry.registration.register_plan(
            "elsewhere", plan_directory(model_dir), VersionSpec(project="alpha"), caller=BOB
        )
    placed = registry.registration.register_plan(
        "placed", plan_directory(model_dir), VersionSpec(project="alpha"), caller=ROOT
    )
    assert placed.project == "alpha"


def test_server_paths_visibility_and_maintenance_need_an_admin(
    registry: Registry, model_dir: Path
) -> None:
    source = SourceRef(type="path", path=str(model_dir))
    with pytest.raises(PermissionDenied) as refused:
        registry.registration.register_source("m", source, VersionSpec(), caller=BOB)
    assert refused.value.code == "insufficient_scope"
    assert registry.registration.register_source("m", source, VersionSpec(), caller=ROOT).version
    _register(registry, model_dir, "own", BOB)
    with pytest.raises(PermissionDenied):
        registry.store.set_public("own", True, caller=BOB)
    with pytest.raises(PermissionDenied):
        registry.files.stored_versions(caller=BOB)
    assert {v.model for v, _ in registry.files.stored_versions(caller=ROOT)} == {"m", "own"}


def test_changes_are_recorded_under_the_callers_name(registry: Registry, model_dir: Path) -> None:
    _register(registry, model_dir, "m", ALICE)
    registry.store.update_model("m", description="edited", caller=ALICE)
    registry.aliases.move("m", "staging", 1, caller=ALICE, reason="try")
    assert registry.store.metadata_history("m", caller=ALICE)[0].actor == ALICE.actor
    assert [e.actor for e in registry.aliases.history("m", caller=ALICE)] == [ALICE.actor] * 2
