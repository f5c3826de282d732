"""Aliases and references: moves with history, stack rollback, resolution of
`name`, `name@alias` and `name:version`."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.errors import (
    AliasNotFound,
    Conflict,
    InvalidName,
    InvalidReference,
    ModelNotFound,
    NothingToRollBack,
    VersionNotFound,
)
from openmaas.registry.composition import Registry
from openmaas.registry.names import Reference, parse_reference
from tests.factories import register


def test_alias_moves_are_recorded_and_rollback_walks_back(
    registry: Registry, tmp_path: Path
) -> None:
    for seed in range(3):
        register(registry, tmp_path, seed=seed)
    registry.aliases.move("clf", "production", 1, actor="a", reason="launch", caller=SYSTEM)
    registry.aliases.move("clf", "production", 2, actor="b", reason="better", caller=SYSTEM)
    assert (
        registry.aliases.move("clf", "production", 2, caller=SYSTEM) is None
    )  # no-op, not recorded
    registry.aliases.move("clf", "production", 3, actor="c", reason="best", caller=SYSTEM)
    assert registry.resolve("clf", caller=SYSTEM).version == 3
    assert (
        registry.aliases.rollback(
            "clf", "production", actor="d", reason="regression", caller=SYSTEM
        ).to_version
        == 2
    )
    assert registry.aliases.rollback("clf", "production", caller=SYSTEM).to_version == 1
    with pytest.raises(NothingToRollBack):
        registry.aliases.rollback("clf", "production", caller=SYSTEM)
    history = registry.aliases.history("clf", "production", caller=SYSTEM)
    assert [(e.action, e.from_version, e.to_version) for e in history] == [
        ("set", None, 1),
        ("move", 1, 2),
        ("move", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
    ]
    assert [e.actor for e in history[:4]] == ["a", "b", "c", "d"]
    assert history[3].reason == "regression"


def test_rollback_skips_deleted_versions_and_stops_at_delete(
    registry: Registry, tmp_path: Path
) -> None:
    for seed in range(3):
        register(registry, tmp_path, seed=seed)
    for version in (1, 2, 3):
        registry.aliases.move("clf", "staging", version, caller=SYSTEM)
    registry.aliases.move("clf", "other", 3, caller=SYSTEM)
    registry.aliases.move("clf", "other", 1, caller=SYSTEM)
    registry.store.delete_version("clf", 2, caller=SYSTEM)
    assert registry.aliases.rollback("clf", "staging", caller=SYSTEM).to_version == 1
    registry.aliases.delete("clf", "staging", reason="retired", caller=SYSTEM)
    registry.aliases.move("clf", "staging", 3, caller=SYSTEM)
    with pytest.raises(NothingToRollBack):
        registry.aliases.rollback("clf", "staging", caller=SYSTEM)
    with pytest.raises(AliasNotFound):
        registry.aliases.rollback("clf", "canary", caller=SYSTEM)


def test_versions_behind_an_alias_cannot_be_deleted(registry: Registry, tmp_path: Path) -> None:
    register(registry, tmp_path, alias="production")
    with pytest.raises(Conflict, match="production"):
        registry.store.delete_version("clf", 1, caller=SYSTEM)


def test_references_resolve_by_alias_version_and_default(
    registry: Registry, tmp_path: Path
) -> None:
    for seed in range(3):
        register(registry, tmp_path, seed=seed)
    assert registry.resolve("clf", caller=SYSTEM).version == 3  # no production alias: newest
    registry.aliases.move("clf", "production", 1, caller=SYSTEM)
    registry.aliases.move("clf", "staging", 2, caller=SYSTEM)
    assert registry.resolve("clf", caller=SYSTEM).version == 1
    assert registry.resolve("clf@staging", caller=SYSTEM).version == 2
    assert registry.resolve("clf@latest", caller=SYSTEM).version == 3
    assert registry.resolve("clf:2", caller=SYSTEM).version == 2
    with pytest.raises(ModelNotFound, match="'nope'"):
        registry.resolve("nope", caller=SYSTEM)
    with pytest.raises(AliasNotFound, match="production, staging"):
        registry.resolve("clf@canary", caller=SYSTEM)
    with pytest.raises(VersionNotFound, match="versions: 1, 2, 3"):
        registry.resolve("clf:9", caller=SYSTEM)


@pytest.mark.parametrize("text", ["m:0", "m:x", "m:-1", "m@", "m@A", "m@a:1", "a b"])
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises((InvalidReference, InvalidName)):
        parse_reference(text)


def test_parse_reference_forms() -> None:
    assert parse_reference("m") == Reference("m")
    assert parse_reference("m@prod") == Reference("m", alias="prod")
    assert parse_reference("m:12") == Reference("m", version=12)
    assert str(parse_reference("m:12")) == "m:12"
