"""Archive members counted as they stream, the per-project storage quota, and bounded Hub
downloads whose files do not outlive their registration (issue 13, "Archives and disk").

The Hub itself is out of reach here (no network): its size decision is tested on the sizes
the Hub's metadata would report, and the cleanup on the registration's download directory.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.errors import PayloadTooLarge
from openmaas.registry import intake
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.composition import Registry
from openmaas.registry.hub import check_hub_size, downloaded_bytes, wanted
from openmaas.registry.intake import (
    ArchiveLimits,
    StorageBudget,
    iter_archive_files,
    pickle_reason,
    zip_entry_count,
)
from openmaas.registry.registration import HUB_CACHE_DIR, VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.store.database import Database
from tests.factories import make_tarball, write_hf_model

MiB = 1024 * 1024
ACME = Principal(project="acme", key_id=7, prefix="acme0001", scopes=(Scope.MODELS_WRITE,))


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _registry(tmp_path: Path, *, quota_bytes: int = 0, max_members: int = 1000) -> Registry:
    db = Database(f"sqlite:///{tmp_path / 'openmaas.db'}")
    db.migrate()
    registry = Registry.create(
        db,
        ArtifactStore(tmp_path / "artifacts"),
        allow_pickle=False,
        limits=ArchiveLimits(64 * MiB, max_members, project_storage_bytes=quota_bytes),
    )
    registry.start()
    return registry


@pytest.fixture
def quota_registry(tmp_path: Path) -> Iterator[Registry]:
    registry = _registry(tmp_path, quota_bytes=1 * MiB)
    yield registry
    registry.db.close()


def _stored(registry: Registry) -> list[str]:
    root = registry.artifacts.root
    return sorted(
        str(p.relative_to(root)) for d in ("staging", "objects") for p in (root / d).iterdir()
    )


# -- archive members -------------------------------------------------------------------------


def test_members_are_counted_as_they_stream_and_refused_at_one_past_the_limit(
    tmp_path: Path,
) -> None:
    path = _tar(tmp_path / "many.tar.gz", {f"m/f{i}.txt": b"x" for i in range(500)})
    with tarfile.open(path, "r:*") as archive:
        with pytest.raises(PayloadTooLarge, match="more than 10 entries"):
            list(iter_archive_files(archive, ArchiveLimits(64 * MiB, 10)))
        # Only the headers up to the refusal were read, not the archive's 500.
        assert len(archive.members) == 11


def test_an_archive_at_the_member_limit_is_accepted(tmp_path: Path) -> None:
    path = _tar(tmp_path / "ten.tar.gz", {f"m/f{i}.txt": b"x" for i in range(10)})
    with tarfile.open(path, "r:*") as archive:
        files = [rel for rel, _, _ in iter_archive_files(archive, ArchiveLimits(64 * MiB, 10))]
    assert len(files) == 10


def test_a_zip_containers_entry_count_is_read_before_zipfile_parses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "weights.bin"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(50):
            archive.writestr(f"archive/{i}", b"")
    assert zip_entry_count(path) == 50
    monkeypatch.setattr(intake, "MAX_ZIP_ENTRIES", 49)
    with pytest.raises(PayloadTooLarge, match="50 entries"):
        pickle_reason("weights.bin", path.read_bytes()[:16], path)


def test_a_safetensors_header_length_that_reads_as_pickle_proto_is_no_pickle(
    tmp_path: Path,
) -> None:
    from safetensors.numpy import save_file

    # Header sizes are padded to 8 bytes: grow the name until the length is 0x0380 (896).
    path = tmp_path / "model.safetensors"
    for size in range(1, 1000):
        save_file({"w" * size: np.zeros(2, dtype=np.float32)}, str(path))
        head = path.read_bytes()[:16]
        if head[:2] == b"\x80\x03":
            break
    assert head[:2] == b"\x80\x03"
    assert pickle_reason("model.safetensors", head, path) is None
    # The same bytes under another name are refused: only the safetensors reader opens them.
    assert pickle_reason("model.bin", head, path) == "the file is a binary pickle stream"


# -- the per-project storage quota -----------------------------------------------------------


def test_the_budget_names_the_quota_and_what_the_project_stores() -> None:
    budget = StorageBudget("acme", quota_bytes=10 * MiB, used_bytes=4 * MiB)
    budget.check(6 * MiB)
    with pytest.raises(PayloadTooLarge) as over:
        budget.check(6 * MiB + 1)
    assert over.value.code == "storage_quota_exceeded"
    assert over.value.message.startswith(
        "project 'acme' may store 10.0 MiB (OPENMAAS_PROJECT_STORAGE_QUOTA_MB); it stores 4.0 MiB"
    )


def test_an_archive_that_unpacks_past_the_quota_is_refused_before_anything_is_written(
    quota_registry: Registry, tmp_path: Path
) -> None:
    model = write_hf_model(tmp_path / "bomb")
    (model / "padding.txt").write_bytes(b"\0" * (2 * MiB))  # compresses to a few KiB
    tarball = make_tarball(model, tmp_path / "bomb.tar.gz")
    assert tarball.stat().st_size < 64 * 1024
    with tarball.open("rb") as handle, pytest.raises(PayloadTooLarge, match="may store 1.0 MiB"):
        quota_registry.registration.register_archive(
            "bomb", handle, VersionSpec(), caller=ACME, source={}
        )
    assert _stored(quota_registry) == []
    assert quota_registry.store.list_models(caller=SYSTEM) == []


def test_the_quota_counts_what_the_project_already_stores(
    quota_registry: Registry, tmp_path: Path
) -> None:
    first = write_hf_model(tmp_path / "first")
    (first / "notes.txt").write_bytes(b"n" * (600 * 1024))
    quota_registry.registration.register_archive(
        "first",
        make_tarball(first, tmp_path / "first.tar.gz"),
        VersionSpec(),
        caller=ACME,
        source={},
    )
    second = write_hf_model(tmp_path / "second", seed=1)
    (second / "notes.txt").write_bytes(b"m" * (600 * 1024))
    with pytest.raises(PayloadTooLarge, match="it stores 0.6 MiB"):
        quota_registry.registration.register_archive(
            "second",
            make_tarball(second, tmp_path / "second.tar.gz"),
            VersionSpec(),
            caller=ACME,
            source={},
        )
    # A directory plan (the Hub's path) is held to the same quota.
    with pytest.raises(PayloadTooLarge, match="OPENMAAS_PROJECT_STORAGE_QUOTA_MB"):
        quota_registry.registration.register_plan(
            "second", plan_directory(second), VersionSpec(), caller=ACME
        )
    assert [m.name for m in quota_registry.store.list_models(caller=SYSTEM)] == ["first"]
    # Admins (the catalog, job outputs) are not bound by it.
    quota_registry.registration.register_plan(
        "second", plan_directory(second), VersionSpec(project="acme"), caller=SYSTEM
    )


# -- Hub downloads ---------------------------------------------------------------------------


def test_hub_downloads_take_the_safe_formats_and_are_bounded_by_their_sizes() -> None:
    listed = ["config.json", "model.safetensors", "pytorch_model.bin", "onnx/model.onnx"]
    assert wanted(listed) == ["config.json", "model.safetensors", "onnx/model.onnx"]
    sizes = {"config.json": 1_000, "model.safetensors": 5 * MiB}
    check_hub_size("org/small", sizes, max_bytes=6 * MiB)
    with pytest.raises(PayloadTooLarge, match="OPENMAAS_MAX_HUB_DOWNLOAD_MB"):
        check_hub_size("org/big", sizes, max_bytes=5 * MiB)
    with pytest.raises(PayloadTooLarge, match="reports no size for 'model.safetensors'"):
        check_hub_size("org/odd", {"model.safetensors": None}, max_bytes=6 * MiB)


def test_a_hub_registrations_download_directory_is_removed_after_it(
    tmp_path: Path,
) -> None:
    registry = _registry(tmp_path)
    try:
        with registry.registration._hub_cache() as download:
            # What snapshot_download leaves: blobs, and a snapshot of links into them.
            (download / "blobs").mkdir()
            (download / "blobs" / "abc").write_bytes(b"w" * 1000)
            (download / "snapshot").mkdir()
            (download / "snapshot" / "model.safetensors").symlink_to(download / "blobs" / "abc")
            assert downloaded_bytes(download / "snapshot") == 1000
            assert download.parent == registry.artifacts.root / HUB_CACHE_DIR
        assert not download.exists()
        assert list((registry.artifacts.root / HUB_CACHE_DIR).iterdir()) == []
    finally:
        registry.db.close()
