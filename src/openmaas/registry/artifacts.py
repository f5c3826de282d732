"""The artifact store: staged writes, sha256 manifests, atomic publish, verification.

A registration copies (and hashes) files into `staging/<id>/`, then renames the directory
to `objects/<id>/` in one step. Nothing half-written is ever under `objects/`; whatever an
interrupted process leaves in `staging/` or unreferenced in `objects/` is swept on start.

Example::

    store = ArtifactStore(Path(".openmaas/artifacts"))
    staged = store.stage_files(walk_directory(Path("my-model")))
    location = store.publish(staged)
    store.verify(location, staged.files)  # -> [] when every file matches
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from openmaas.registry.entities import FileEntry, VerifyProblem

CHUNK_BYTES = 1024 * 1024
# A process may still be working in a staging directory this young; leave it alone.
ORPHAN_GRACE_S = 3600.0

Progress = Callable[[int], None]  # called with the number of bytes just processed


@dataclass(frozen=True, slots=True)
class StagedArtifact:
    path: Path
    files: tuple[FileEntry, ...]

    @property
    def size_bytes(self) -> int:
        return sum(entry.size for entry in self.files)


def hash_file(path: Path, progress: Progress | None = None) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
    return FileEntry(path="", size=size, sha256=digest.hexdigest())


def hash_files(
    files: Mapping[str, Path], progress: Progress | None = None
) -> tuple[FileEntry, ...]:
    entries = []
    for rel, path in sorted(files.items()):
        entry = hash_file(path, progress)
        entries.append(FileEntry(path=rel, size=entry.size, sha256=entry.sha256))
    return tuple(entries)


def _copy_hashing(source: IO[bytes], target: Path, progress: Progress | None) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as out:
        while chunk := source.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


class ArtifactStore:
    """Local-directory artifact store with atomic publish and hash verification."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging_dir = root / "staging"
        self.objects_dir = root / "objects"

    def start(self) -> None:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.objects_dir.mkdir(parents=True, exist_ok=True)

    def new_staging(self) -> Path:
        path = self.staging_dir / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def stage_files(
        self, files: Mapping[str, Path], progress: Progress | None = None
    ) -> StagedArtifact:
        """Copy `files` ({relative path: source}) into a new staging directory, hashing them."""
        staging = self.new_staging()
        try:
            return self.stage_streams(
                staging, ((rel, src.open("rb")) for rel, src in sorted(files.items())), progress
            )
        except BaseException:
            self.discard(staging)
            raise

    def stage_streams(
        self,
        staging: Path,
        streams: Iterable[tuple[str, IO[bytes]]],
        progress: Progress | None = None,
    ) -> StagedArtifact:
        """Write each (relative path, stream) under `staging`; the caller discards on failure."""
        entries = []
        for rel, stream in streams:
            with stream:
                size, sha256 = _copy_hashing(stream, staging / rel, progress)
            entries.append(FileEntry(path=rel, size=size, sha256=sha256))
        return StagedArtifact(path=staging, files=tuple(sorted(entries, key=lambda e: e.path)))

    def publish(self, staged: StagedArtifact) -> str:
        """Make a staged directory permanent in one rename; returns its location key."""
        key = staged.path.name
        for entry in staged.files:
            # Published files are read-only: a version's bytes never change.
            (staged.path / entry.path).chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(staged.path, self.objects_dir / key)
        return key

    def path_of(self, key: str) -> Path:
        return self.objects_dir / key

    def discard(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def remove(self, key: str) -> None:
        shutil.rmtree(self.objects_dir / key, ignore_errors=True)

    def sweep_orphans(self, referenced: set[str], *, grace_s: float = ORPHAN_GRACE_S) -> list[str]:
        """Delete what interrupted registrations left behind; returns what was removed."""
        removed = []
        now = time.time()
        for parent, keep in ((self.staging_dir, set()), (self.objects_dir, referenced)):
            if not parent.is_dir():
                continue
            for entry in parent.iterdir():
                if entry.name in keep or now - entry.stat().st_mtime < grace_s:
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry.relative_to(self.root)))
        return removed


def verify_files(
    root: Path, manifest: Iterable[FileEntry], progress: Progress | None = None
) -> list[VerifyProblem]:
    """Re-hash every file of a manifest under `root`; an empty list means all match."""
    problems = []
    expected = {entry.path: entry for entry in manifest}
    for rel, entry in sorted(expected.items()):
        path = root / rel
        if not path.is_file():
            problems.append(VerifyProblem(path=rel, problem="missing"))
            continue
        if path.stat().st_size != entry.size:
            problems.append(VerifyProblem(path=rel, problem="size_mismatch"))
            if progress is not None:
                progress(entry.size)
            continue
        if hash_file(path, progress).sha256 != entry.sha256:
            problems.append(VerifyProblem(path=rel, problem="hash_mismatch"))
    return problems
