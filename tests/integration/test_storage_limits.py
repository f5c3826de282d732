"""Archives and disk against a real server over HTTP (issue 13): an archive one entry past
OPENMAAS_MAX_ARCHIVE_MEMBERS is refused 413, and a tenant's small compressed archive that
unpacks past its project's storage quota is refused 413 naming the quota, with nothing left
in storage; the quota counts what the project already stores, and binds no admin.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmaas import APIError, Client
from tests.factories import make_tarball, write_hf_model
from tests.integration.conftest import RunningServer, assert_api_error, start_server, stop_server

MiB = 1024 * 1024
MAX_MEMBERS = 50
QUOTA_MB = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("storage") / "home",
        {
            "OPENMAAS_MAX_ARCHIVE_MEMBERS": str(MAX_MEMBERS),
            "OPENMAAS_PROJECT_STORAGE_QUOTA_MB": str(QUOTA_MB),
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def acme(server: RunningServer, admin: Client) -> Iterator[Client]:
    admin.create_project("acme")
    key = admin.create_key("acme-models", ["models:read", "models:write"], project="acme").key
    with Client(server.url, api_key=key) as client:
        yield client


def _stored(server: RunningServer) -> list[str]:
    root = server.home / "artifacts"
    return sorted(
        str(p.relative_to(root))
        for d in ("staging", "objects")
        if (root / d).is_dir()
        for p in (root / d).iterdir()
    )


def test_an_archive_one_entry_past_the_member_limit_is_refused(
    acme: Client, tmp_path: Path
) -> None:
    path = tmp_path / "many.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for i in range(MAX_MEMBERS + 1):
            info = tarfile.TarInfo(f"model/f{i}.json")
            info.size = 2
            archive.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(APIError) as refused:
        acme.upload("many-members", path)
    assert_api_error(refused, 413, "payload_too_large")
    assert f"more than {MAX_MEMBERS} entries" in refused.value.message
    assert "OPENMAAS_MAX_ARCHIVE_MEMBERS" in refused.value.message


def test_a_compression_bomb_past_the_projects_quota_is_refused_and_leaves_nothing(
    server: RunningServer, acme: Client, tmp_path: Path
) -> None:
    before = _stored(server)
    model = write_hf_model(tmp_path / "bomb")
    (model / "padding.txt").write_bytes(b"\0" * (3 * MiB))
    bomb = make_tarball(model, tmp_path / "bomb.tar.gz")
    assert bomb.stat().st_size < 64 * 1024  # a few KiB on the wire, 3 MiB unpacked
    with pytest.raises(APIError) as refused:
        acme.upload("bomb", bomb)
    assert_api_error(refused, 413, "storage_quota_exceeded")
    assert refused.value.message.startswith(
        f"project 'acme' may store {QUOTA_MB}.0 MiB (OPENMAAS_PROJECT_STORAGE_QUOTA_MB)"
    )
    assert _stored(server) == before
    with pytest.raises(APIError) as absent:
        acme.get_model("bomb")
    assert_api_error(absent, 404, "model_not_found")


def test_the_quota_counts_what_the_project_stores_and_binds_no_admin(
    server: RunningServer, acme: Client, admin: Client, tmp_path: Path
) -> None:
    first = write_hf_model(tmp_path / "first")
    (first / "notes.txt").write_bytes(os.urandom(600 * 1024))
    acme.upload("acme-first", first)
    second = write_hf_model(tmp_path / "second", seed=1)
    (second / "notes.txt").write_bytes(os.urandom(600 * 1024))
    with pytest.raises(APIError) as refused:
        acme.upload("acme-second", second)
    assert_api_error(refused, 413, "storage_quota_exceeded")
    assert "it stores 0.6 MiB" in refused.value.message
    # Deleting frees the project's storage; admins are not bound by the quota.
    acme.delete_model("acme-first")
    acme.upload("acme-second", second)
    big = write_hf_model(tmp_path / "big", seed=2)
    (big / "notes.txt").write_bytes(b"\0" * (3 * MiB))
    assert admin.upload("admin-big", big).version == 1
