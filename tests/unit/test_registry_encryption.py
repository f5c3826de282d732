"""Encryption at rest in the registry: stored files are ciphertext, manifests and verification
keep their plaintext meaning, loaders get a private decrypted copy that is deleted after the
load, wrong keys are named, and key rotation is resumable and crash-safe."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.cli.admin import rekey_store
from openmaas.crypto import EncryptionKey, Keyring, peek_header
from openmaas.errors import (
    ArtifactCorrupted,
    EncryptionKeyError,
    ModelLoadFailed,
    OpenMaaSError,
)
from openmaas.observability.metrics import Metrics
from openmaas.registry import artifacts
from openmaas.registry.artifacts import REKEY_TEMP_NAME, ArtifactStore
from openmaas.registry.composition import Registry
from openmaas.registry.intake import ArchiveLimits
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.registry.variants import VariantSpec
from openmaas.runtimes import base
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.serving.pool import ModelPool, PoolLimits
from openmaas.settings import Settings
from openmaas.store.database import Database
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore
from openmaas.wiring import Services
from tests.factories import make_tarball, write_hf_model

PLAINTEXT_MARKERS = (b"BertForSequenceClassification", b"hidden_size", b"[MASK]", b"positive")


class Home:
    """One state directory, opened with whatever key a test likes (as a restarted server)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scratch = (root / "shm", root / "tmp")
        for directory in self.scratch:
            directory.mkdir(parents=True)
        self._open: list[Database] = []

    def registry(self, key: EncryptionKey | Keyring | None) -> Registry:
        keys = key if isinstance(key, Keyring) else Keyring(key)
        db = Database(f"sqlite:///{self.root / 'openmaas.db'}")
        db.migrate()
        self._open.append(db)
        store = ArtifactStore(self.root / "artifacts", keys, scratch_dirs=self.scratch)
        registry = Registry.create(
            db, store, allow_pickle=False, limits=ArchiveLimits(64 << 20, 1000)
        )
        registry.start()
        return registry

    def scratch_leftovers(self) -> list[Path]:
        return [p for d in self.scratch for p in d.iterdir()]

    def close(self) -> None:
        for db in self._open:
            db.close()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    opened = Home(tmp_path / "home")
    yield opened
    opened.close()


@pytest.fixture
def key() -> EncryptionKey:
    return EncryptionKey.generate()


def stored_bytes(registry: Registry) -> dict[str, bytes]:
    return {
        str(p.relative_to(registry.artifacts.objects_dir)): p.read_bytes()
        for p in registry.artifacts.stored_files()
    }


def key_ids(registry: Registry) -> list[str | None]:
    headers = (peek_header(p) for p in registry.artifacts.stored_files())
    return sorted((h.key_id if h is not None else None) for h in headers)  # type: ignore[type-var]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stored_files_are_ciphertext_with_plaintext_manifests(
    home: Home, key: EncryptionKey, tmp_path: Path
) -> None:
    source = write_hf_model(tmp_path / "m")
    registry = home.registry(key)
    version = registry.registration.register_plan(
        "m", plan_directory(source), VersionSpec(), caller=SYSTEM
    )
    stored = stored_bytes(registry)
    assert len(stored) == len(version.files) == 4
    for content in stored.values():
        assert not any(marker in content for marker in PLAINTEXT_MARKERS)
    for entry in version.files:
        assert entry.sha256 == sha256(source / entry.path)
        assert entry.size == (source / entry.path).stat().st_size
    assert key_ids(registry) == [key.key_id] * 4
    assert registry.files.verify("m", 1, caller=SYSTEM).ok
    again = registry.registration.register_plan(
        "m", plan_directory(source), VersionSpec(), caller=SYSTEM
    )
    comparison = registry.store.compare("m", 1, again.version, caller=SYSTEM)
    assert (comparison.files_changed, comparison.files_unchanged) == ((), 4)


def test_an_uploaded_archive_is_detected_and_stored_encrypted(
    home: Home, key: EncryptionKey, tmp_path: Path
) -> None:
    archive = make_tarball(write_hf_model(tmp_path / "m"), tmp_path / "m.tar.gz")
    registry = home.registry(key)
    version = registry.registration.register_archive(
        "m", archive, VersionSpec(), source={"upload": "m"}, caller=SYSTEM
    )
    assert (version.task, version.runtime) == ("text-classification", "transformers")
    assert all(
        not any(marker in content for marker in PLAINTEXT_MARKERS)
        for content in stored_bytes(registry).values()
    )
    assert home.scratch_leftovers() == []  # the unpacked plaintext is gone
    assert registry.files.verify("m", 1, caller=SYSTEM).ok


def test_loaders_get_a_private_decrypted_copy(
    home: Home, key: EncryptionKey, tmp_path: Path
) -> None:
    source = write_hf_model(tmp_path / "m")
    registry = home.registry(key)
    registry.registration.register_plan("m", plan_directory(source), VersionSpec(), caller=SYSTEM)
    with registry.open_files("m:1", caller=SYSTEM) as opened:
        assert opened.decrypted
        assert opened.directory.parent == home.scratch[0]  # memory first
        assert stat.S_IMODE(opened.directory.stat().st_mode) == 0o700
        for path in source.iterdir():
            assert (opened.directory / path.name).read_bytes() == path.read_bytes()
    assert not opened.directory.exists()
    with pytest.raises(OpenMaaSError, match="encrypted at rest"):
        registry.files.open_stored("m:1", caller=SYSTEM)


def test_a_plaintext_store_opens_in_place(home: Home, tmp_path: Path) -> None:
    registry = home.registry(None)
    registry.registration.register_plan(
        "m", plan_directory(write_hf_model(tmp_path / "m")), VersionSpec(), caller=SYSTEM
    )
    with registry.open_files("m", caller=SYSTEM) as opened:
        assert not opened.decrypted
        assert opened.directory == registry.artifacts.objects_dir / opened.directory.name
    assert opened.directory.is_dir()  # closing never deletes the store's own files
    assert registry.files.open_stored("m", caller=SYSTEM)[1] == opened.directory


def test_wrong_or_missing_key_is_named_never_garbage(
    home: Home, key: EncryptionKey, tmp_path: Path
) -> None:
    home.registry(key).registration.register_plan(
        "m", plan_directory(write_hf_model(tmp_path / "m")), VersionSpec(), caller=SYSTEM
    )
    other = EncryptionKey.generate()
    for configured, code in ((other, "encryption_key_mismatch"), (None, "encryption_key_missing")):
        registry = home.registry(configured)
        with pytest.raises(EncryptionKeyError) as verify:
            registry.files.verify("m", 1, caller=SYSTEM)
        assert verify.value.code == code
        assert key.key_id in verify.value.message
        with pytest.raises(EncryptionKeyError) as opening:
            registry.open_files("m:1", caller=SYSTEM)
        assert opening.value.code == code
        assert home.scratch_leftovers() == []


def test_tampered_ciphertext_fails_verification_and_loading(
    home: Home, key: EncryptionKey, tmp_path: Path
) -> None:
    registry = home.registry(key)
    registry.registration.register_plan(
        "m", plan_directory(write_hf_model(tmp_path / "m")), VersionSpec(), caller=SYSTEM
    )
    with registry.open_files("m:1", caller=SYSTEM) as opened:
        pass
    weights = next(registry.artifacts.objects_dir.rglob("model.safetensors"))
    weights.chmod(0o644)
    content = bytearray(weights.read_bytes())
    content[100] ^= 0x01
    weights.write_bytes(bytes(content))
    report = registry.files.verify("m", 1, caller=SYSTEM)
    assert [(p.path, p.problem) for p in report.problems] == [
        ("model.safetensors", "decryption_failed")
    ]
    with pytest.raises(ArtifactCorrupted, match="model.safetensors"):
        registry.open_files("m:1", caller=SYSTEM)
    assert home.scratch_leftovers() == []
    assert not opened.directory.exists()


def test_scratch_falls_back_when_memory_is_short_and_stale_copies_are_swept(
    home: Home, key: EncryptionKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = home.registry(key).artifacts
    real_usage = shutil.disk_usage

    def tiny_memory(path: os.PathLike[str] | str) -> shutil._ntuple_diskusage:
        usage = real_usage(path)
        return usage._replace(free=1024) if Path(path) == home.scratch[0] else usage

    monkeypatch.setattr(artifacts.shutil, "disk_usage", tiny_memory)
    fallback = store.new_scratch(10 << 20)
    assert fallback.parent == home.scratch[1]
    stale = store.new_scratch(0)
    an_hour_ago = time.time() - 2 * artifacts.ORPHAN_GRACE_S
    os.utime(stale, (an_hour_ago, an_hour_ago))
    foreign = home.scratch[1] / "openmaas-plain-0123456789ab-other-store"
    foreign.mkdir()
    os.utime(foreign, (an_hour_ago, an_hour_ago))
    assert store.sweep_scratch() == [stale]
    assert fallback.is_dir()
    assert foreign.is_dir()


# -- key rotation --------------------------------------------------------------------------


def test_rotation_encrypts_a_plaintext_store_then_rekeys_it_and_can_resume(
    home: Home, key: EncryptionKey, tmp_path: Path
) -> None:
    plain = home.registry(None)
    plain.registration.register_plan(
        "a", plan_directory(write_hf_model(tmp_path / "a")), VersionSpec(), caller=SYSTEM
    )
    plain.registration.register_plan(
        "b", plan_directory(write_hf_model(tmp_path / "b", seed=1)), VersionSpec(), caller=SYSTEM
    )

    encrypted = rekey_store(home.registry(key), Keyring(key))
    assert (encrypted.rekeyed, encrypted.unchanged, encrypted.problems) == (8, 0, [])
    assert key_ids(plain) == [key.key_id] * 8

    new = EncryptionKey.generate()
    rotated = rekey_store(home.registry(new), Keyring(new, previous=(key,)))
    assert (rotated.rekeyed, rotated.problems) == (8, [])
    again = rekey_store(home.registry(new), Keyring(new, previous=(key,)))
    assert (again.rekeyed, again.unchanged) == (0, 8)  # a re-run finds nothing left to do

    assert home.registry(new).files.verify("a", 1, caller=SYSTEM).ok
    with pytest.raises(EncryptionKeyError, match="encrypted with key id"):
        home.registry(key).files.verify("b", 1, caller=SYSTEM)
    for path in plain.artifacts.stored_files():
        assert stat.S_IMODE(path.stat().st_mode) == 0o444  # still read-only

    decrypted = rekey_store(home.registry(None), Keyring(None, previous=(new,)))
    assert decrypted.rekeyed == 8
    assert home.registry(None).files.open_stored("b", caller=SYSTEM)[0].version == 1


def test_a_crash_mid_rotation_leaves_every_file_whole_under_one_key(
    home: Home, key: EncryptionKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home.registry(key).registration.register_plan(
        "m", plan_directory(write_hf_model(tmp_path / "m")), VersionSpec(), caller=SYSTEM
    )
    new = EncryptionKey.generate()
    both = Keyring(new, previous=(key,))
    renames = 0
    real_replace = os.replace

    def power_cut_on_third(src: str | Path, dst: str | Path) -> None:
        nonlocal renames
        renames += 1
        if renames == 3:
            raise KeyboardInterrupt("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", power_cut_on_third)
    with pytest.raises(KeyboardInterrupt):
        rekey_store(home.registry(new), both)
    monkeypatch.undo()
    registry = home.registry(both)
    assert key_ids(registry) == sorted([new.key_id] * 2 + [key.key_id] * 2)
    assert not list(registry.artifacts.objects_dir.rglob(REKEY_TEMP_NAME))
    assert registry.files.verify(
        "m", 1, caller=SYSTEM
    ).ok  # every file whole; both keys read them meanwhile
    # A kill -9 leaves the half-written file behind: the re-run sweeps it.
    leftover = next(registry.artifacts.objects_dir.iterdir()) / REKEY_TEMP_NAME
    leftover.write_bytes(b"half-written")
    finished = rekey_store(registry, both)
    assert (finished.rekeyed, finished.unchanged, finished.problems) == (2, 2, [])
    assert not leftover.exists()
    assert home.registry(new).files.verify("m", 1, caller=SYSTEM).ok


def test_rotation_leaves_a_file_that_no_longer_matches_its_manifest(
    home: Home, key: EncryptionKey, tmp_path: Path
) -> None:
    registry = home.registry(None)
    registry.registration.register_plan(
        "m", plan_directory(write_hf_model(tmp_path / "m")), VersionSpec(), caller=SYSTEM
    )
    vocab = next(registry.artifacts.objects_dir.rglob("vocab.txt"))
    vocab.chmod(0o644)
    vocab.write_text(vocab.read_text().replace("w1", "w9"))
    report = rekey_store(home.registry(key), Keyring(key))
    assert report.rekeyed == 3
    assert [(path, "manifest" in problem) for path, problem in report.problems] == [
        ("m:1/vocab.txt", True)
    ]
    assert peek_header(vocab) is None  # left as it was


# -- the pool deletes decrypted copies ---------------------------------------------------------


class FileCountModel(LoadedModel):
    def __init__(self, source: ModelSource, dependency: LoadedModel | None) -> None:
        self.source = source
        self.tasks = frozenset({Task.TEXT_CLASSIFICATION})
        self.memory_bytes = 1
        self.labels = ("x",)
        self.dependency = dependency

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        return [[LabelScore("x", 1.0)] for _ in texts]


class ReadsAtLoad(Runtime):
    """Reads `weights.txt` while loading; opens the dependency it names, if any."""

    name = "reads-at-load"
    tasks = frozenset({Task.TEXT_CLASSIFICATION})

    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        text = (source.directory / "weights.txt").read_text()
        if text == "fail":
            raise OSError("unreadable weights")
        dependency = None
        if text.startswith("needs "):
            opened = options.open_dependency(text.removeprefix("needs "))
            dependency = base.get_runtime(opened.runtime).load(opened, options)
        return FileCountModel(source, dependency)


class ReadsLater(ReadsAtLoad):
    name = "reads-later"
    reads_files_after_load = True


@pytest.fixture
def test_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base.RUNTIMES, "reads-at-load", f"{__name__}:ReadsAtLoad")
    monkeypatch.setitem(base.RUNTIMES, "reads-later", f"{__name__}:ReadsLater")


def _opener(
    tmp_path: Path, weights: dict[str, tuple[str, str]], released: list[str]
) -> Callable[[str, int], ModelSource]:
    def open_source(name: str, version: int = 1) -> ModelSource:
        runtime, content = weights[name]
        directory = tmp_path / f"copy-of-{name}"
        directory.mkdir(exist_ok=True)
        (directory / "weights.txt").write_text(content)

        def release() -> None:
            released.append(name)
            shutil.rmtree(directory, ignore_errors=True)

        return ModelSource(
            name=name,
            version=version,
            task="text-classification",
            runtime=runtime,
            format="test",
            params={},
            directory=directory,
            release_directory=release,
        )

    return open_source


@pytest.mark.usefixtures("test_runtimes")
@pytest.mark.asyncio
async def test_the_pool_deletes_decrypted_copies_once_loaded(tmp_path: Path) -> None:
    released: list[str] = []
    weights = {
        "head": ("reads-at-load", "needs encoder"),
        "encoder": ("reads-at-load", "1"),
        "lazy": ("reads-later", "1"),
        "broken": ("reads-at-load", "fail"),
    }
    open_source = _opener(tmp_path, weights, released)
    pool = ModelPool(
        open_source,
        PoolLimits(),
        Metrics(),
        LoadOptions(open_dependency=lambda ref: open_source(ref, 1)),
    )
    await pool.load(("head", 1))
    assert sorted(released) == ["encoder", "head"]  # the dependency's copy too
    lazy = await pool.load(("lazy", 1))
    assert "lazy" not in released  # kept while it is loaded
    assert lazy.model.source.directory.is_dir()
    with pytest.raises(ModelLoadFailed):
        await pool.load(("broken", 1))
    assert "broken" in released
    await pool.unload(("lazy", 1))
    assert "lazy" in released
    await pool.close()


def test_services_refuse_a_malformed_key(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, encryption_key="c2hvcnQ=")  # type: ignore[arg-type]
    with pytest.raises(EncryptionKeyError, match="decodes to 5 bytes"):
        Services.build(settings)


def test_rotation_rekeys_a_versions_variant_against_its_own_manifest(
    home: Home, key: EncryptionKey, tmp_path: Path
) -> None:
    """A version's ONNX variant moves to the new key with the version, each file checked
    against the variant's manifest; a tampered variant file is named, and left as it was."""
    registry = home.registry(key)
    registry.registration.register_plan(
        "m", plan_directory(write_hf_model(tmp_path / "m")), VersionSpec(), caller=SYSTEM
    )
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(os.urandom(4096))
    (export / "config.json").write_text('{"exported": true}')
    pin = registry.store.pin("m", 1, caller=SYSTEM)
    spec = VariantSpec(kind="onnx", runtime="onnx", job_id="optjob-1")
    variant = registry.variants.add(pin, spec, export, caller=SYSTEM)

    new = EncryptionKey.generate()
    rotated = rekey_store(home.registry(new), Keyring(new, previous=(key,)))
    assert (rotated.rekeyed, rotated.problems) == (6, [])  # the version's 4 and the variant's 2
    after = home.registry(new)
    version = after.get_version("m", 1, caller=SYSTEM)
    opened = after.files.open_variant(version, version.variants[0], caller=SYSTEM)
    try:
        assert opened.decrypted
        served = (opened.directory / "model.onnx").read_bytes()
        assert served == (export / "model.onnx").read_bytes()
    finally:
        opened.close()

    ((_, _, root),) = after.files.stored_variants(caller=SYSTEM)
    config = root / "config.json"
    config.chmod(0o644)
    config.write_bytes(b"tampered")
    newer = EncryptionKey.generate()
    report = rekey_store(home.registry(newer), Keyring(newer, previous=(new,)))
    assert report.rekeyed == 5
    assert [(label, "manifest" in problem) for label, problem in report.problems] == [
        ("m:1 onnx variant/config.json", True)
    ]
    assert version.variants[0].id == variant.id
