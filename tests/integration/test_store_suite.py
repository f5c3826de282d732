"""One store suite, run on SQLite and on the PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from openmaas.errors import ModelNotFound, NothingToRollBack
from openmaas.registry.entities import Lineage
from openmaas.registry.service import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.store.database import Database
from tests.conftest import build_registry
from tests.factories import write_hf_model

pytestmark = pytest.mark.postgres

PROCESSES = 4
REGISTRATIONS_PER_PROCESS = 5


def test_migrations_create_the_schema_and_are_idempotent(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    db.migrate()
    tables = set(inspect(db.engine).get_table_names())
    assert {
        "registered_models",
        "model_versions",
        "model_aliases",
        "alias_events",
        "metadata_edits",
        "alembic_version",
    } <= tables
    db.close()


def test_registry_rules_hold_on_the_backend(database_url: str, tmp_path: Path) -> None:
    registry = build_registry(database_url, tmp_path / "artifacts")
    for seed in range(3):
        registry.register_plan(
            "clf",
            plan_directory(write_hf_model(tmp_path / f"m{seed}", seed=seed)),
            VersionSpec(
                metrics={"acc": 0.5 + seed / 10},
                tags={"seed": str(seed)},
                lineage=Lineage(dataset_id=f"d{seed}"),
                created_by="ci",
            ),
        )
    versions = registry.list_versions("clf")
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[2].metrics == {"acc": pytest.approx(0.7)}
    assert versions[0].lineage.dataset_id == "d0"
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=5) < v.created_at <= now for v in versions)

    registry.set_alias("clf", "production", 1, actor="a")
    registry.set_alias("clf", "production", 3, actor="b")
    assert registry.resolve("clf").version == 3
    assert registry.rollback_alias("clf", "production").to_version == 1
    with pytest.raises(NothingToRollBack):
        registry.rollback_alias("clf", "production")
    assert [e.action for e in registry.alias_history("clf")] == ["set", "move", "rollback"]

    registry.update_version("clf", 2, description="edited", tags={"seed": None}, actor="c")
    assert registry.get_version("clf", 2).tags == {}
    assert registry.metadata_history("clf", 2)[0].after == {"description": "edited", "tags": {}}
    assert registry.compare("clf", 1, 3).metrics["acc"]["delta"] == pytest.approx(0.2)
    assert registry.verify("clf", 3).ok

    registry.delete_model("clf")
    with pytest.raises(ModelNotFound):
        registry.get_model("clf")
    assert registry.list_models() == []
    registry.db.close()


def _register_many(url: str, artifacts: str, source: str, count: int) -> list[int]:
    registry = build_registry(url, Path(artifacts))
    numbers = [
        registry.register_plan("shared", plan_directory(Path(source)), VersionSpec()).version
        for _ in range(count)
    ]
    registry.db.close()
    return numbers


def test_concurrent_registrations_from_processes_get_distinct_gap_free_numbers(
    database_url: str, tmp_path: Path
) -> None:
    source = write_hf_model(tmp_path / "src")
    artifacts = tmp_path / "artifacts"
    # No migration beforehand: the processes also race to create the schema.
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(
            _register_many,
            [(database_url, str(artifacts), str(source), REGISTRATIONS_PER_PROCESS)] * PROCESSES,
        )
    numbers = sorted(n for result in results for n in result)
    assert numbers == list(range(1, PROCESSES * REGISTRATIONS_PER_PROCESS + 1))
    registry = build_registry(database_url, artifacts)
    assert all(registry.verify("shared", n).ok for n in numbers)
    assert len(list((artifacts / "objects").iterdir())) == len(numbers)
    registry.db.close()
