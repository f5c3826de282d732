"""Safe intake and verified artifacts: pickles refused, archives contained, nothing partial."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.errors import ArtifactCorrupted, PayloadTooLarge, UnsafeArtifact
from openmaas.registry.artifacts import ArtifactStore
from openmaas.registry.composition import Registry
from openmaas.registry.entities import Storage
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from tests.conftest import build_registry
from tests.factories import make_tarball, write_hf_model


def leftovers(registry: Registry) -> list[str]:
    root = registry.artifacts.root
    return sorted(
        str(p.relative_to(root)) for d in ("staging", "objects") for p in (root / d).iterdir()
    )


def torch_style_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": [1.0]}))
        archive.writestr("archive/version", "3\n")


@pytest.mark.parametrize(
    ("filename", "write", "reason"),
    [
        ("pytorch_model.bin", lambda p: p.write_bytes(pickle.dumps({"w": 1})), "binary pickle"),
        ("pytorch_model.bin", torch_style_zip, "data.pkl"),
        ("head.joblib", lambda p: p.write_bytes(b"anything"), ".joblib files are pickles"),
        ("model.pt", lambda p: p.write_bytes(b"anything"), ".pt files are pickles"),
        ("weights.dat", lambda p: p.write_bytes(pickle.dumps([1, 2], protocol=5)), "pickle"),
        ("objects.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "Python objects"),
    ],
)
def test_pickle_based_files_are_refused_naming_file_and_setting(
    registry: Registry, tmp_path: Path, filename: str, write: object, reason: str
) -> None:
    model_dir = write_hf_model(tmp_path / "m")
    write(model_dir / filename)  # type: ignore[operator]
    with pytest.raises(UnsafeArtifact) as caught:
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(), caller=SYSTEM
        )
    assert filename in caught.value.message
    assert reason in caught.value.message
    assert "OPENMAAS_ALLOW_PICKLE" in caught.value.message
    assert leftovers(registry) == []


def test_safe_binary_files_are_accepted(registry: Registry, tmp_path: Path) -> None:
    model_dir = write_hf_model(tmp_path / "m")
    np.save(model_dir / "table.npy", np.arange(10, dtype=np.float32))
    (model_dir / "model.bin").write_bytes(b"\x06\x00\x00\x00ctranslate2-like payload")
    version = registry.registration.register_plan(
        "m", plan_directory(model_dir), VersionSpec(), caller=SYSTEM
    )
    assert {"table.npy", "model.bin"} <= {f.path for f in version.files}


def test_operator_can_opt_in_to_pickles(tmp_path: Path) -> None:
    registry = build_registry(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "art", allow_pickle=True
    )
    model_dir = write_hf_model(tmp_path / "m")
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}))
    version = registry.registration.register_plan(
        "m", plan_directory(model_dir), VersionSpec(), caller=SYSTEM
    )
    assert "pytorch_model.bin" in {f.path for f in version.files}


def test_verify_and_open_detect_tampering_naming_the_file(
    registry: Registry, tmp_path: Path
) -> None:
    registry.registration.register_plan(
        "m", plan_directory(write_hf_model(tmp_path / "m")), VersionSpec(), caller=SYSTEM
    )
    assert registry.files.verify("m", 1, caller=SYSTEM).ok
    _, root = registry.files.open_stored("m:1", caller=SYSTEM)
    target = root / "vocab.txt"
    target.chmod(0o644)
    target.write_text(target.read_text().replace("w1", "w9"))
    (root / "extra.json").write_text("{}")
    (root / "config.json").chmod(0o644)
    (root / "config.json").unlink()
    report = registry.files.verify("m", 1, caller=SYSTEM)
    assert not report.ok
    assert {(p.path, p.problem) for p in report.problems} == {
        ("vocab.txt", "hash_mismatch"),
        ("config.json", "missing"),
        ("extra.json", "unexpected"),
    }
    with pytest.raises(ArtifactCorrupted, match="config.json"):
        registry.files.open_stored("m:1", caller=SYSTEM)


def test_a_store_without_any_of_a_versions_files_is_named_as_the_wrong_store(
    registry: Registry, tmp_path: Path
) -> None:
    """A replica whose artifacts dir is not the one its database's versions were written to
    finds none of their files: the error names the setting, not a damaged file."""
    version = registry.registration.register_plan(
        "m", plan_directory(write_hf_model(tmp_path / "m")), VersionSpec(), caller=SYSTEM
    )
    _, root = registry.files.open_stored("m:1", caller=SYSTEM)
    for path in root.iterdir():
        path.chmod(0o644)
        path.unlink()
    with pytest.raises(ArtifactCorrupted) as caught:
        registry.files.open_stored("m:1", caller=SYSTEM)
    expected = f"m:1: none of its {len(version.files)} files is in this server's artifact store"
    assert expected in caught.value.message
    assert "OPENMAAS_ARTIFACTS_URL" in caught.value.message


def test_in_place_registration_is_verified_against_the_source(
    registry: Registry, tmp_path: Path
) -> None:
    model_dir = write_hf_model(tmp_path / "installed")
    version = registry.registration.register_plan(
        "m", plan_directory(model_dir), VersionSpec(), storage=Storage.EXTERNAL, caller=SYSTEM
    )
    assert version.storage == "external"
    assert leftovers(registry) == []  # nothing copied
    (model_dir / "vocab.txt").write_text("changed")
    assert [p.problem for p in registry.files.verify("m", 1, caller=SYSTEM).problems] == [
        "size_mismatch"
    ]


def test_failed_commit_leaves_no_version_and_no_files(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = write_hf_model(tmp_path / "m")
    registry.registration.register_plan(
        "m", plan_directory(model_dir), VersionSpec(), caller=SYSTEM
    )
    before = leftovers(registry)

    def crash(*_args: object) -> None:
        raise RuntimeError("power cut while recording the alias")

    monkeypatch.setattr(registry.registration, "_set_alias", crash)
    with pytest.raises(RuntimeError):
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(alias="staging"), caller=SYSTEM
        )
    assert leftovers(registry) == before
    assert [v.version for v in registry.store.list_versions("m", caller=SYSTEM)] == [1]
    monkeypatch.undo()
    # The number the failed registration took was rolled back with it: no gap.
    assert (
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(), caller=SYSTEM
        ).version
        == 2
    )


def test_failure_while_copying_leaves_nothing(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = write_hf_model(tmp_path / "m")
    calls = 0

    def failing_progress(_n: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.registration.register_plan(
            "m", plan_directory(model_dir), VersionSpec(), progress=failing_progress, caller=SYSTEM
        )
    assert leftovers(registry) == []


def test_orphans_of_a_killed_process_are_swept_on_start(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "art")
    store.start()
    stale = store.new_staging()
    (stale / "half.bin").write_bytes(b"x")
    orphan = store.objects_dir / "deadbeef"
    orphan.mkdir()
    fresh = store.new_staging()  # another process may be writing this one right now
    old = time.time() - 7200
    for path in (stale, orphan):
        os.utime(path, (old, old))
    removed = store.sweep_orphans(referenced=set())
    assert sorted(removed) == sorted([f"staging/{stale.name}", "objects/deadbeef"])
    assert fresh.exists()


def test_archive_upload_unpacks_single_top_directory(registry: Registry, tmp_path: Path) -> None:
    tarball = make_tarball(write_hf_model(tmp_path / "bert-tiny"), tmp_path / "m.tar.gz")
    with tarball.open("rb") as handle:
        version = registry.registration.register_archive(
            "m", handle, VersionSpec(), source={"type": "upload"}, caller=SYSTEM
        )
    assert "config.json" in {f.path for f in version.files}
    assert version.task == "text-classification"


def _tar_with(entries: list[tarfile.TarInfo], tmp_path: Path) -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for info in entries:
            data = b"x" * info.size if info.isfile() else None
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([_file("config.json"), _file("../escape.txt")], "'..'"),
        ([_file("config.json"), _file("/etc/cron.d/x")], "absolute path"),
        ([_file("config.json"), _link("vocab.txt", "/etc/passwd", tarfile.SYMTYPE)], "links"),
        ([_file("config.json"), _link("vocab.txt", "config.json", tarfile.LNKTYPE)], "links"),
    ],
)
def test_archives_that_escape_or_link_are_refused(
    registry: Registry, tmp_path: Path, entries: list[tarfile.TarInfo], message: str
) -> None:
    path = _tar_with(entries, tmp_path)
    with path.open("rb") as handle, pytest.raises(UnsafeArtifact, match=message):
        registry.registration.register_archive("m", handle, VersionSpec(), source={}, caller=SYSTEM)
    assert leftovers(registry) == []
    assert not (tmp_path / "escape.txt").exists()


def test_archive_size_and_member_limits(tmp_path: Path) -> None:
    registry = build_registry(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "art")
    big = _tar_with([_file("config.json"), _file("model.safetensors", 65 * 1024 * 1024)], tmp_path)
    with big.open("rb") as handle, pytest.raises(PayloadTooLarge, match="MiB"):
        registry.registration.register_archive("m", handle, VersionSpec(), source={}, caller=SYSTEM)
    many = _tar_with([_file(f"f{i}.json") for i in range(1001)], tmp_path)
    with many.open("rb") as handle, pytest.raises(PayloadTooLarge, match="entries"):
        registry.registration.register_archive("m", handle, VersionSpec(), source={}, caller=SYSTEM)
    assert leftovers(registry) == []


def test_a_pickle_inside_an_archive_is_refused(registry: Registry, tmp_path: Path) -> None:
    model_dir = write_hf_model(tmp_path / "m")
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}))
    tarball = make_tarball(model_dir, tmp_path / "m.tar.gz")
    with tarball.open("rb") as handle, pytest.raises(UnsafeArtifact, match="pytorch_model.bin"):
        registry.registration.register_archive("m", handle, VersionSpec(), source={}, caller=SYSTEM)
    assert leftovers(registry) == []


def test_not_an_archive_is_a_clear_error(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArtifact, match="not a readable"):
        registry.registration.register_archive(
            "m", io.BytesIO(b"plain text"), VersionSpec(), source={}, caller=SYSTEM
        )
