"""Configured paths are absolute from the start: a relative home (the default `./.openmaas`)
must not reach a library that joins it to a directory of its own (VADER read its lexicon from
its package folder, and `vader` answered 503 on a default first start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.settings import Settings


def test_relative_paths_become_absolute_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(home=Path("state"), artifacts_dir=Path("blobs"))
    assert settings.home == tmp_path / "state"
    assert settings.artifact_root == tmp_path / "blobs"
    assert settings.database_url == f"sqlite:///{(tmp_path / 'state' / 'openmaas.db').as_posix()}"
    assert Settings(home=Path(".openmaas")).artifact_root == tmp_path / ".openmaas" / "artifacts"


def test_a_relative_sqlite_url_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worker processes get the URL as it is: a relative one would follow their directory.
    monkeypatch.chdir(tmp_path)
    relative = Settings(database_url="sqlite:///state/registry.db")
    assert relative.database_url == f"sqlite:///{tmp_path / 'state' / 'registry.db'}"
    absolute = f"sqlite:///{tmp_path / 'x.db'}"
    assert Settings(database_url=absolute).database_url == absolute
    for unchanged in ("sqlite://", "sqlite:///:memory:", "postgresql://user@db:5432/maas"):
        assert Settings(database_url=unchanged).database_url == unchanged
