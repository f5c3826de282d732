"""One store suite, run on SQLite and on the PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import column, insert, inspect, select, table
from sqlalchemy.exc import IntegrityError

from openmaas.auth.entities import SYSTEM
from openmaas.errors import (
    GateFailed,
    ModelNotFound,
    NotFound,
    NothingToRollBack,
    VersionNotFound,
)
from openmaas.registry.entities import Lineage
from openmaas.registry.policies import AliasPolicy
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.registry.traffic import RollbackPolicy, TrafficSpec
from openmaas.registry.variants import VariantSpec
from openmaas.store.database import Database
from openmaas.store.migrate import alembic_config
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
        "alias_traffic",
        "alias_policies",
        "version_variants",
        "server_checks",
        "alembic_version",
    } <= tables
    db.close()


def test_registry_rules_hold_on_the_backend(database_url: str, tmp_path: Path) -> None:
    registry = build_registry(database_url, tmp_path / "artifacts")
    for seed in range(3):
        registry.registration.register_plan(
            "clf",
            plan_directory(write_hf_model(tmp_path / f"m{seed}", seed=seed)),
            VersionSpec(
                metrics={"acc": 0.5 + seed / 10},
                tags={"seed": str(seed)},
                lineage=Lineage(dataset_id=f"d{seed}"),
                created_by="ci",
            ),
            caller=SYSTEM,
        )
    versions = registry.store.list_versions("clf", caller=SYSTEM)
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[2].metrics == {"acc": pytest.approx(0.7)}
    assert versions[0].lineage.dataset_id == "d0"
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=5) < v.created_at <= now for v in versions)

    registry.aliases.move("clf", "production", 1, actor="a", caller=SYSTEM)
    registry.aliases.move("clf", "production", 3, actor="b", caller=SYSTEM)
    assert registry.resolve("clf", caller=SYSTEM).version == 3
    assert registry.aliases.rollback("clf", "production", caller=SYSTEM).to_version == 1
    with pytest.raises(NothingToRollBack):
        registry.aliases.rollback("clf", "production", caller=SYSTEM)
    assert [e.action for e in registry.aliases.history("clf", caller=SYSTEM)] == [
        "set",
        "move",
        "rollback",
    ]

    registry.store.update_version(
        "clf", 2, description="edited", tags={"seed": None}, actor="c", caller=SYSTEM
    )
    assert registry.get_version("clf", 2, caller=SYSTEM).tags == {}
    assert registry.store.metadata_history("clf", 2, caller=SYSTEM)[0].after == {
        "description": "edited",
        "tags": {},
    }
    assert registry.store.compare("clf", 1, 3, caller=SYSTEM).metrics["acc"][
        "delta"
    ] == pytest.approx(0.2)
    assert registry.files.verify("clf", 3, caller=SYSTEM).ok

    registry.store.delete_model("clf", caller=SYSTEM)
    with pytest.raises(ModelNotFound):
        registry.get_model("clf", caller=SYSTEM)
    assert registry.list_models(caller=SYSTEM) == []
    registry.db.close()


def test_traffic_splits_and_gates_hold_on_the_backend(database_url: str, tmp_path: Path) -> None:
    registry = build_registry(database_url, tmp_path / "artifacts")
    for seed in range(3):
        registry.registration.register_plan(
            "ranker",
            plan_directory(write_hf_model(tmp_path / f"r{seed}", seed=seed)),
            VersionSpec(),
            caller=SYSTEM,
        )
    registry.aliases.move("ranker", "production", 1, caller=SYSTEM)
    spec = TrafficSpec(
        weights={1: 80, 2: 20},
        sticky="X-User-Id",
        shadow=3,
        shadow_share=0.5,
        rollback=RollbackPolicy(max_error_rate_delta=0.02, min_requests=50),
    )
    before, split = registry.traffic.set("ranker", "production", spec, caller=SYSTEM)
    assert before is None
    assert (split.baseline, split.weights, split.candidates) == (1, {1: 80, 2: 20}, (2,))
    assert (split.sticky, split.shadow, split.shadow_share) == ("x-user-id", 3, 0.5)
    assert [s.id for s in registry.traffic.active(caller=SYSTEM)] == [split.id]
    replaced, again = registry.traffic.set(
        "ranker", "production", TrafficSpec(weights={1: 50, 2: 50}), caller=SYSTEM
    )
    assert replaced is not None
    assert replaced.rollback == RollbackPolicy(max_error_rate_delta=0.02, min_requests=50)
    assert again.weights == {1: 50, 2: 50}
    # Moving the alias (a promotion) ends the split in the same transaction.
    registry.aliases.move("ranker", "production", 2, caller=SYSTEM)
    assert registry.traffic.active(caller=SYSTEM) == []
    with pytest.raises(NotFound):
        registry.traffic.get("ranker", "production", caller=SYSTEM)

    registry.aliases.policies.set(
        "ranker", "production", AliasPolicy("file-1", "macro_f1", 0.01), caller=SYSTEM
    )
    stored = registry.aliases.policies.get("ranker", "production", caller=SYSTEM)
    assert stored.policy == AliasPolicy("file-1", "macro_f1", 0.01)
    # No gate in this process: a gated move fails closed, a forced one goes through.
    with pytest.raises(GateFailed):
        registry.aliases.move("ranker", "production", 3, caller=SYSTEM)
    forced = registry.aliases.move(
        "ranker", "production", 3, caller=SYSTEM, force=True, reason="drill"
    )
    assert forced is not None
    assert forced.gate is not None
    assert forced.gate["forced"] is True
    registry.aliases.policies.delete("ranker", "production", caller=SYSTEM)
    assert registry.aliases.policies.find("ranker", "production", caller=SYSTEM) is None
    registry.store.delete_model("ranker", caller=SYSTEM)
    registry.db.close()


def _register_many(url: str, artifacts: str, source: str, count: int) -> list[int]:
    registry = build_registry(url, Path(artifacts))
    numbers = [
        registry.registration.register_plan(
            "shared", plan_directory(Path(source)), VersionSpec(), caller=SYSTEM
        ).version
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
    assert all(registry.files.verify("shared", n, caller=SYSTEM).ok for n in numbers)
    assert len(list((artifacts / "objects").iterdir())) == len(numbers)
    registry.db.close()


def test_each_project_holds_its_own_names_on_the_backend(database_url: str, tmp_path: Path) -> None:
    registry = build_registry(database_url, tmp_path / "artifacts")
    for seed, project in enumerate(("p-one", "p-two")):
        registry.registration.register_plan(
            "same",
            plan_directory(write_hf_model(tmp_path / project, seed=seed)),
            VersionSpec(project=project),
            caller=SYSTEM,
        )
    listed = [(m.project, m.name) for m in registry.list_models(caller=SYSTEM)]
    assert listed == [("p-one", "same"), ("p-two", "same")]
    assert registry.resolve("p-two/same", caller=SYSTEM).version == 1
    registry.store.delete_model("p-one/same", caller=SYSTEM)
    assert registry.resolve("same", caller=SYSTEM).project == "p-two"  # the only one left
    registry.db.close()


def test_the_names_migration_keeps_models_and_frees_names_per_project(
    database_url: str, tmp_path: Path
) -> None:
    """A database made before names were per project upgrades in place: its models stay,
    and a second project may then take a name the first holds."""
    db = Database(database_url)
    command.upgrade(alembic_config(db.engine), "0006_job_kinds")
    moment = datetime.now(UTC)
    row = {
        "description": "",
        "tags": "{}",
        "last_version": 0,
        "created_at": moment,
        "updated_at": moment,
        "created_by": "ci",
        "public": False,
    }
    models = table(
        "registered_models",
        *(column(c) for c in ("name", "project", *row)),
    )
    with db.engine.begin() as connection:
        connection.execute(insert(models).values(name="old", project="alpha", **row))
        # One namespace before the upgrade:
        with pytest.raises(IntegrityError), connection.begin_nested():
            connection.execute(insert(models).values(name="old", project="beta", **row))
    db.migrate()
    with db.engine.begin() as connection:
        connection.execute(insert(models).values(name="old", project="beta", **row))
        # Still one per project:
        with pytest.raises(IntegrityError), connection.begin_nested():
            connection.execute(insert(models).values(name="old", project="beta", **row))
        names = connection.execute(select(models.c.project, models.c.name)).all()
    assert sorted(names) == [("alpha", "old"), ("beta", "old")]
    db.close()


def test_a_versions_variant_is_stored_swept_around_and_deleted_with_it(
    database_url: str, tmp_path: Path
) -> None:
    """A variant's row and files live as long as its version: deleting the version (or its
    model) removes both, on either backend (the rows by the foreign key's cascade); the
    artifact sweep keeps a live variant's files; a pin of a deleted version adds none."""
    registry = build_registry(database_url, tmp_path / "artifacts")
    for seed in range(2):
        registry.registration.register_plan(
            "clf", plan_directory(write_hf_model(tmp_path / f"m{seed}", seed=seed)),
            VersionSpec(), caller=SYSTEM,
        )  # fmt: skip
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"graph")
    spec = VariantSpec(
        kind="onnx",
        runtime="onnx",
        job_id="optjob-1",
        params={"normalize": "l2"},
        settings={"atol": 1e-4},
        metrics={"export_max_abs_difference": 2e-6},
    )
    pins = [registry.store.pin("clf", n, caller=SYSTEM) for n in (1, 2)]
    first = registry.variants.add(pins[0], spec, export, caller=SYSTEM)
    assert registry.variants.add(pins[0], spec, export, caller=SYSTEM) == first  # same job
    second = registry.variants.add(pins[1], replace(spec, job_id="optjob-2"), export, caller=SYSTEM)
    (listed,) = registry.get_version("clf", 1, caller=SYSTEM).variants
    assert listed == first
    assert listed.within_tolerance
    assert [f.path for f in listed.files] == ["model.onnx"]
    locations = [registry.store.variant_location(v.id) for v in (first, second)]
    assert set(locations) <= registry.store.stored_locations()
    assert registry.artifacts.sweep_orphans(registry.store.stored_locations(), grace_s=0) == []

    registry.store.delete_version("clf", 1, caller=SYSTEM)
    assert not registry.artifacts.path_of(locations[0]).exists()
    with pytest.raises(VersionNotFound):
        registry.store.variant_location(first.id)
    with pytest.raises(VersionNotFound):
        registry.variants.add(pins[0], replace(spec, job_id="optjob-3"), export, caller=SYSTEM)
    registry.store.delete_model("clf", caller=SYSTEM)
    assert not registry.artifacts.path_of(locations[1]).exists()
    with pytest.raises(VersionNotFound):
        registry.store.variant_location(second.id)
    registry.db.close()
