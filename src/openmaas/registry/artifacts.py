"""The artifact store: staged writes, sha256 manifests, atomic publish, verification.

A registration copies (and hashes) files into `staging/<id>/`, then renames the directory
to `objects/<id>/` in one step. Nothing half-written is ever under `objects/`; whatever an
interrupted process leaves in `staging/` or unreferenced in `objects/` is swept on start.

With an encryption key (`Keyring`), every file written into the store is encrypted at rest
(`openmaas.crypto`); manifests keep the *plaintext* size and sha256, so verification and
comparisons mean what they did. Readers go through `open_plaintext`, which decrypts when a
file is encrypted and passes plaintext files through, so a store may hold both (a plaintext
store that got a key later; an interrupted key rotation). Runtimes that need a directory get
a decrypted copy in a private scratch directory (`new_scratch` + `copy_plaintext`).

Example::

    store = ArtifactStore(Path(".openmaas/artifacts"), Keyring(key))
    staged = store.stage_files(walk_directory(Path("my-model")))
    location = store.publish(staged)
    verify_files(store.path_of(location), staged.files, keys=store.keys)  # -> [] when all match
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from openmaas.crypto import (
    EncryptingWriter,
    EncryptionKey,
    Keyring,
    decrypt_chunks,
    encrypted_size,
    open_plaintext,
    peek_header,
    read_header,
)
from openmaas.errors import ArtifactCorrupted, InvalidRequest, NotFound
from openmaas.registry.entities import FileEntry, VerifyProblem

CHUNK_BYTES = 1024 * 1024
# A process may still be working in a staging directory this young; leave it alone.
ORPHAN_GRACE_S = 3600.0
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
# Decrypted copies go to memory when it has room for them plus this margin.
# mkdir of a fresh random name with mode 0700 is safe in a shared directory.
MEMORY_SCRATCH = Path("/dev/shm")  # noqa: S108
SCRATCH_HEADROOM_BYTES = 256 * 1024 * 1024
# Where `rekey_file` writes a file's new form before renaming it over the old one.
REKEY_TEMP_NAME = ".openmaas-rekey.tmp"
# Blobs are written as `<name><PART_SUFFIX>` and renamed into place, so a reader never sees
# half a file; listings skip the leftovers of an interrupted write.
PART_SUFFIX = ".openmaas-part"
# Top-level names the registry's own layout uses: a blob key may not start with one.
RESERVED_PREFIXES = frozenset({"staging", "objects"})

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


def _copy_hashing(
    source: IO[bytes], target: Path, key: EncryptionKey | None, progress: Progress | None
) -> tuple[int, str]:
    """Write `source` to a new file `target` (encrypted under `key` when given) and fsync it;
    returns the plaintext's size and sha256."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as out:
        writer: EncryptingWriter | BinaryIO = out if key is None else EncryptingWriter(out, key)
        while chunk := source.read(CHUNK_BYTES):
            writer.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
        if isinstance(writer, EncryptingWriter):
            writer.close()
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _fsync_directory(path: Path) -> None:
    # Makes a rename inside the directory durable (POSIX; a no-op where unsupported).
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class ArtifactStore:
    """Local-directory artifact store with atomic publish and hash verification; files are
    encrypted at rest when `keys` has a current key.

    Example::

        store = ArtifactStore(root, Keyring(EncryptionKey.from_text(text, origin="env")))
        store.write_stream(upload, store.root / "datasets" / "d1" / "train.jsonl")
        with store.open_plaintext(store.root / "datasets" / "d1" / "train.jsonl") as rows:
            first = rows.readline()
        store.put_file("jobs/ftjob-1/ckpt-1/state.json", Path("state.json"))  # blobs by key
        store.list_keys("jobs/ftjob-1")  # -> ["jobs/ftjob-1/ckpt-1/state.json"]
    """

    def __init__(
        self,
        root: Path,
        keys: Keyring | None = None,
        *,
        scratch_dirs: Sequence[Path] | None = None,
    ) -> None:
        self.root = root
        self.staging_dir = root / "staging"
        self.objects_dir = root / "objects"
        self.keys = keys or Keyring()
        # Candidates for decrypted copies, best first; the last is used when none has room.
        self.scratch_dirs = tuple(
            scratch_dirs
            if scratch_dirs is not None
            else (MEMORY_SCRATCH, Path(tempfile.gettempdir()))
        )

    @property
    def encrypts(self) -> bool:
        """Whether files written now are encrypted."""
        return self.keys.encrypts

    def start(self) -> None:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.sweep_scratch()

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
                entry = self.write_stream(stream, staging / rel, progress)
            entries.append(FileEntry(path=rel, size=entry.size, sha256=entry.sha256))
        return StagedArtifact(path=staging, files=tuple(sorted(entries, key=lambda e: e.path)))

    # -- reading and writing any stored file (artifacts, and datasets later) ---------------------

    def write_stream(
        self, source: IO[bytes], target: Path, progress: Progress | None = None
    ) -> FileEntry:
        """Write `source` to the new file `target` (it must not exist), encrypted when the
        store has a key, and fsync it. Returns the plaintext's size and sha256 (path "")."""
        size, sha256 = _copy_hashing(source, target, self.keys.current, progress)
        return FileEntry(path="", size=size, sha256=sha256)

    def open_plaintext(self, path: Path, *, name: str | None = None) -> BinaryIO:
        """The plaintext of a stored file, decrypted as it is read when it is encrypted.
        Raises `EncryptionKeyError` when no configured key opens it."""
        return open_plaintext(path, self.keys, name=name)

    def is_encrypted(self, path: Path) -> bool:
        return peek_header(path) is not None

    def remove_tree(self, path: Path) -> None:
        """Delete a directory (or file) written with `write_stream`, wherever it is stored."""
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    # -- plaintext copies for loaders ------------------------------------------------------------

    @property
    def scratch_prefix(self) -> str:
        # Names this store's copies, so a sweep never touches another store's or process's.
        tag = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return f"openmaas-plain-{tag}-"

    def new_scratch(self, size_bytes: int) -> Path:
        """A new private directory (mode 0700) for `size_bytes` of plaintext: on the first
        candidate with room (memory, /dev/shm, by default), else on the last. The caller
        removes it with `discard` as soon as it can."""
        base = self.scratch_dirs[-1]
        for candidate in self.scratch_dirs[:-1]:
            try:
                usage = shutil.disk_usage(candidate)
            except OSError:
                continue
            if os.access(candidate, os.W_OK) and usage.free >= size_bytes + SCRATCH_HEADROOM_BYTES:
                base = candidate
                break
        path = base / f"{self.scratch_prefix}{uuid.uuid4().hex}"
        path.mkdir(mode=0o700)
        path.chmod(0o700)  # whatever the umask
        return path

    def sweep_scratch(self, *, grace_s: float = ORPHAN_GRACE_S) -> list[Path]:
        """Delete decrypted copies a crashed process left behind (older than `grace_s`)."""
        removed = []
        now = time.time()
        for base in self.scratch_dirs:
            try:
                leftovers = list(base.glob(f"{self.scratch_prefix}*"))
            except OSError:
                continue
            for path in leftovers:
                try:
                    if now - path.stat().st_mtime < grace_s:
                        continue
                except OSError:
                    continue
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def copy_plaintext(
        self,
        root: Path,
        manifest: Iterable[FileEntry],
        target: Path,
        progress: Progress | None = None,
    ) -> list[VerifyProblem]:
        """Decrypt every file of a manifest from `root` into `target`, checking each against
        the manifest on the way (one pass: this is also the verification)."""
        problems = []
        for entry in sorted(manifest, key=lambda e: e.path):
            destination = target / entry.path
            destination.parent.mkdir(parents=True, exist_ok=True)
            problem = _check_file(root / entry.path, entry, self.keys, progress, destination)
            if problem is not None:
                problems.append(VerifyProblem(path=entry.path, problem=problem))
        return problems

    # -- blobs by key: what jobs store (checkpoints, outputs), never through a path ------------

    def put_file(self, key: str, path: Path) -> FileEntry:
        """Store the local file `path` under `key` (replacing what was there), encrypted when
        the store has a key; atomic: readers see the old blob or the whole new one."""
        with path.open("rb") as source:
            return self.put_stream(key, source)

    def put_bytes(self, key: str, data: bytes) -> FileEntry:
        return self.put_stream(key, io.BytesIO(data))

    def put_stream(self, key: str, source: IO[bytes]) -> FileEntry:
        target = self._blob_path(key)
        part = target.with_name(f"{target.name}.{uuid.uuid4().hex}{PART_SUFFIX}")
        try:
            entry = self.write_stream(source, part)
            os.replace(part, target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)
        return FileEntry(path=key, size=entry.size, sha256=entry.sha256)

    def open_blob(self, key: str) -> BinaryIO:
        """The plaintext of the blob `key` (NotFound when there is none)."""
        path = self._blob_path(key)
        if not path.is_file():
            raise NotFound(f"artifact {key!r} not found")
        return self.open_plaintext(path, name=key)

    def get_bytes(self, key: str) -> bytes:
        with self.open_blob(key) as blob:
            return blob.read()

    def fetch_to(self, key: str, local_path: Path) -> None:
        """Copy the plaintext of blob `key` to the new local file `local_path`."""
        local_path.parent.mkdir(parents=True, exist_ok=True)
        with self.open_blob(key) as blob, local_path.open("xb") as out:
            shutil.copyfileobj(blob, out, CHUNK_BYTES)

    def list_keys(self, prefix: str) -> list[str]:
        """Every blob key under `prefix` ("a/b" lists "a/b/..."), sorted."""
        base = self._blob_path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            f"{prefix.rstrip('/')}/{path.relative_to(base).as_posix()}"
            for path in base.rglob("*")
            if path.is_file() and not path.name.endswith(PART_SUFFIX)
        )

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob under `prefix` (and `prefix` itself when it is one blob)."""
        path = self._blob_path(prefix)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _blob_path(self, key: str) -> Path:
        parts = key.strip("/").split("/")
        if (
            not key
            or key.startswith("/")
            or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
            or parts[0] in RESERVED_PREFIXES
        ):
            raise InvalidRequest(f"artifact key {key!r}: use relative names below the store")
        return self.root.joinpath(*parts)

    # -- key rotation ------------------------------------------------------------------------

    def stored_files(self) -> Iterator[Path]:
        """Every file under `objects/`, in a stable order."""
        for dirpath, dirnames, filenames in os.walk(self.objects_dir):
            dirnames.sort()
            for name in sorted(filenames):
                if name != REKEY_TEMP_NAME:
                    yield Path(dirpath) / name

    def area_files(self, area: str) -> list[Path]:
        """Every file under the top-level `area` ("datasets", "jobs"), sorted: what key
        rotation rewrites beside the versions."""
        root = self.root / area
        if not root.is_dir():
            return []
        return sorted(
            path
            for path in root.rglob("*")
            if path.is_file()
            and path.name != REKEY_TEMP_NAME
            and not path.name.endswith(PART_SUFFIX)
        )

    def sweep_rekey_leftovers(self) -> list[Path]:
        """Delete the half-written files an interrupted `rekey_file` left behind."""
        leftovers = sorted(self.root.rglob(REKEY_TEMP_NAME))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return leftovers

    def rekey_file(
        self,
        path: Path,
        keys: Keyring,
        *,
        expected: FileEntry | None = None,
        progress: Progress | None = None,
    ) -> bool:
        """Rewrite one stored file under `keys.current` (plaintext when it is None), reading
        it with any key of `keys`. Returns False when it already was in that form.

        Crash-safe: the new form is written beside the file, fsynced, then renamed over it,
        so the file is always complete under the old key or the new one. With `expected`
        (the manifest entry), a file whose plaintext no longer matches is left as it is and
        `ArtifactCorrupted` raised.
        """
        header = peek_header(path)
        current = keys.current.key_id if keys.current is not None else None
        name = (
            str(path.relative_to(self.objects_dir))
            if path.is_relative_to(self.objects_dir)
            else path.name
        )
        if (header.key_id if header is not None else None) == current:
            if progress is not None:
                progress(expected.size if expected is not None else path.stat().st_size)
            return False
        temp = path.with_name(REKEY_TEMP_NAME)
        temp.unlink(missing_ok=True)
        try:
            with open_plaintext(path, keys, name=name) as plain:
                size, sha256 = _copy_hashing(plain, temp, keys.current, progress)
            if expected is not None and (size, sha256) != (expected.size, expected.sha256):
                raise ArtifactCorrupted(
                    f"{name}: its content no longer matches the manifest; left unchanged"
                )
            temp.chmod(stat.S_IMODE(path.stat().st_mode))
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)
        return True

    # -- publishing and removal ------------------------------------------------------------

    def publish(self, staged: StagedArtifact) -> str:
        """Make a staged directory permanent in one rename; returns its location key."""
        key = staged.path.name
        for entry in staged.files:
            # Published files are read-only: a version's bytes never change.
            (staged.path / entry.path).chmod(READ_ONLY)
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
    root: Path,
    manifest: Iterable[FileEntry],
    progress: Progress | None = None,
    *,
    keys: Keyring | None = None,
) -> list[VerifyProblem]:
    """Re-hash every file of a manifest under `root` (decrypting the encrypted ones with
    `keys`); an empty list means all match. A file no configured key opens raises
    `EncryptionKeyError`: that is the server's configuration, not the file, at fault."""
    problems = []
    expected = {entry.path: entry for entry in manifest}
    for rel, entry in sorted(expected.items()):
        problem = _check_file(root / rel, entry, keys or Keyring(), progress, None)
        if problem is not None:
            problems.append(VerifyProblem(path=rel, problem=problem))
    return problems


def _check_file(
    path: Path,
    entry: FileEntry,
    keys: Keyring,
    progress: Progress | None,
    copy_to: Path | None,
) -> str | None:
    """What is wrong with one stored file (None: it matches its manifest entry); its
    plaintext is written to `copy_to` on the way when given."""
    if not path.is_file():
        return "missing"
    with path.open("rb") as handle:
        try:
            header = read_header(handle, entry.path)
        except ArtifactCorrupted:  # a damaged header
            return "decryption_failed"
        stored_bytes = os.fstat(handle.fileno()).st_size
        if header is None:
            expected_bytes = entry.size
        else:
            expected_bytes = encrypted_size(entry.size, header.chunk_bytes)
        if stored_bytes != expected_bytes:
            if progress is not None:
                progress(entry.size)
            return "size_mismatch"
        handle.seek(0)
        digest = hashlib.sha256()
        out = copy_to.open("xb") if copy_to is not None else None
        try:
            for chunk in decrypt_chunks(handle, keys, entry.path):
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        except ArtifactCorrupted:
            return "decryption_failed"
        finally:
            if out is not None:
                out.close()
    return None if digest.hexdigest() == entry.sha256 else "hash_mismatch"
