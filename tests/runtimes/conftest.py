"""Fixtures for the runtime tests: the built-in catalog registered once per session, so tests
load the real packaged models exactly as the server does (registry -> hash check -> runtime)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.catalog.service import CatalogService
from openmaas.registry.composition import Registry
from openmaas.runtimes.base import LoadOptions, ModelSource
from tests.conftest import build_registry

SourceOpener = Callable[[str], ModelSource]


@pytest.fixture(scope="session")
def catalog_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A SQLite registry holding every catalog entry installed on this machine."""
    root = tmp_path_factory.mktemp("catalog-registry")
    registry = build_registry(f"sqlite:///{root / 'openmaas.db'}", root / "artifacts")
    CatalogService(registry).register_available()
    yield registry
    registry.db.close()


def open_source(registry: Registry, reference: str) -> ModelSource:
    version, directory = registry.files.open_stored(reference, caller=SYSTEM)
    return ModelSource.from_version(version, directory)


@pytest.fixture(scope="session")
def catalog_source(catalog_registry: Registry) -> SourceOpener:
    """`catalog_source("vader")`: a catalog model's source; skips when it is not installed."""

    def opener(reference: str) -> ModelSource:
        name = reference.partition("@")[0].partition(":")[0]
        if name not in {m.name for m in catalog_registry.list_models(caller=SYSTEM)}:
            pytest.skip(f"catalog model {name!r} is not installed on this machine")
        return open_source(catalog_registry, reference)

    return opener


@pytest.fixture(scope="session")
def open_dependency(catalog_registry: Registry) -> SourceOpener:
    """What the server passes as `LoadOptions.open_dependency`: a reference to a source."""
    return lambda reference: open_source(catalog_registry, reference)


@pytest.fixture(scope="session")
def catalog_options(open_dependency: SourceOpener) -> LoadOptions:
    """Load options whose dependencies (a linear head's encoder) come from the registry."""
    return LoadOptions(open_dependency=open_dependency)
