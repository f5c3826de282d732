"""Fixtures shared by every test directory."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.composition import Registry
from openmaas.registry.intake import ArchiveLimits
from openmaas.store.database import Database


def pytest_configure(config: pytest.Config) -> None:
    # One thread per process for torch's and OpenMP's kernels, here and in every server and
    # worker the tests start (they inherit the environment): the suite runs as many processes
    # as the machine has cores, and on busy cores OpenMP's threads wait on each other (a tiny
    # GPT-2 generated at 5 ms a token with one thread, 57 ms with two, on a loaded machine).
    # Tests that are about threads set them explicitly.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    # The CLI's tables fit its terminal. The tests run it as subprocesses whose terminal is
    # whatever runs the suite (80 columns in a pytest-xdist worker): give every one the same
    # wide terminal, so no cell the tests read is cut.
    os.environ["COLUMNS"] = "200"


# Seconds each slow test module took in a full run (`tests/module_seconds.json`; modules under
# 5 s are left out). `make test` runs pytest-xdist with whole modules per process and
# `--no-loadscope-reorder`, so modules start in collection order: longest first, so that no
# long module starts last while the other process idles (longest-processing-time-first
# scheduling). Regenerate it from a run's JUnit XML with `python tests/module_seconds.py`.
MODULE_SECONDS_FILE = Path(__file__).with_name("module_seconds.json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seconds: dict[str, float] = json.loads(MODULE_SECONDS_FILE.read_text())
    root = config.rootpath

    def weight(item: pytest.Item) -> float:
        return -seconds.get(item.path.relative_to(root).as_posix(), 0.0)

    items.sort(key=weight)  # stable: a module's tests keep their order


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"openmaas_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - the CI machine always has PostgreSQL
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required for these tests: {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as connection:
        connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs once on SQLite and once on a clean PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'openmaas.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    _reset_postgres(url)
    return url


def build_registry(url: str, artifacts: Path, *, allow_pickle: bool = False) -> Registry:
    db = Database(url)
    db.migrate()
    registry = Registry.create(
        db,
        ArtifactStore(artifacts),
        allow_pickle=allow_pickle,
        limits=ArchiveLimits(max_total_bytes=64 * 1024 * 1024, max_members=1000),
    )
    registry.start()
    return registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry on SQLite in a temporary directory (fast unit tests)."""
    service = build_registry(f"sqlite:///{tmp_path / 'openmaas.db'}", tmp_path / "artifacts")
    yield service
    service.db.close()


def shared_datasets() -> Path | None:
    """The labeled datasets shared beside the checkout (`../shared/datasets` of the checkout
    or of a directory above it), or `$OPENMAAS_SHARED_DATASETS`; None when neither exists."""
    import os

    given = os.environ.get("OPENMAAS_SHARED_DATASETS")
    if given:
        return Path(given) if Path(given).is_dir() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


SHARED_DATASETS = shared_datasets()
# Tests that train on real data skip, naming what is missing, where the datasets are absent.
needs_shared_datasets = pytest.mark.skipif(
    SHARED_DATASETS is None,
    reason="needs the shared datasets (../shared/datasets or $OPENMAAS_SHARED_DATASETS)",
)
