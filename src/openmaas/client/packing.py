"""Pack a local model directory into a .tar.gz for upload, reporting progress in bytes.

The archive holds one top directory (as `tar czf model.tar.gz model` would make), so the
server strips exactly that prefix and the registered paths are the directory's own paths.

Example::

    def show(event: UploadProgress) -> None:
        print(event.phase, event.done, "/", event.total)

    pack_directory(Path("my-model"), Path("my-model.tar.gz"), progress=show)
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from openmaas.protocol.registry import SKIPPED_NAMES

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# Model weights are mostly incompressible floats: the fastest gzip level packs gigabytes in
# seconds and the archive is barely larger than at level 9.
COMPRESS_LEVEL = 1


@dataclass(frozen=True, slots=True)
class UploadProgress:
    """One progress report: `done` of `total` bytes of the current phase.

    `pack` covers reading the directory into the temporary archive, `upload` covers sending
    the archive; after the last `upload` report the server unpacks and hashes the files.
    """

    phase: Literal["pack", "upload"]
    done: int
    total: int


ProgressCallback = Callable[[UploadProgress], None]


class ProgressReader:
    """A read-only binary file that calls `on_read(n)` with the size of every chunk read.

    It exposes `fileno()` so httpx can size the multipart body up front and send a
    Content-Length (which lets the server refuse an oversized upload before reading it).
    """

    def __init__(self, handle: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._handle = handle
        self._on_read = on_read
        self.name = getattr(handle, "name", "upload")

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        if chunk:
            self._on_read(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()


def model_files(directory: Path) -> dict[str, Path]:
    """Every regular file to upload from `directory`, as {relative POSIX path: file}.

    Follows file symlinks (a Hugging Face cache snapshot is made of them) and refuses
    directory symlinks, as the server does for directories it reads itself; VCS and tool
    caches (`.git`, `__pycache__`, ...) are left out.
    """
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        current = Path(dirpath)
        for name in list(dirnames):
            if name in SKIPPED_NAMES:
                dirnames.remove(name)
            elif (current / name).is_symlink():
                rel = (current / name).relative_to(directory).as_posix()
                raise ValueError(
                    f"{rel!r} in {directory} is a directory symlink, which uploads do not "
                    "follow; copy the directory instead"
                )
        for name in filenames:
            if name in SKIPPED_NAMES:
                continue
            path = current / name
            rel = path.relative_to(directory).as_posix()
            if not path.is_file():
                raise ValueError(f"{rel!r} in {directory} is not a regular file")
            files[rel] = path
    if not files:
        raise ValueError(f"directory {directory} holds no files to upload")
    return dict(sorted(files.items()))


def pack_directory(
    directory: Path, target: Path, *, progress: ProgressCallback | None = None
) -> Path:
    """Write `directory` as a gzip tarball at `target`; returns `target`."""
    files = model_files(directory)
    total = sum(path.stat().st_size for path in files.values())
    top = directory.resolve().name or "model"
    done = 0

    def on_read(size: int) -> None:
        nonlocal done
        done += size
        if progress is not None:
            progress(UploadProgress("pack", done, total))

    if progress is not None:
        progress(UploadProgress("pack", 0, total))
    # dereference=True stores what a file symlink points to, never the link itself: the
    # server refuses links in archives.
    with tarfile.open(target, "w:gz", compresslevel=COMPRESS_LEVEL, dereference=True) as archive:
        for rel, path in files.items():
            info = archive.gettarinfo(str(path), arcname=f"{top}/{rel}")
            # Ownership and permissions of the packer's machine mean nothing on the server.
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with path.open("rb") as handle:
                archive.addfile(info, ProgressReader(handle, on_read))
    return target


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


@contextlib.contextmanager
def upload_reader(path: Path, progress: ProgressCallback | None) -> Iterator[ProgressReader]:
    """`path` opened for an upload body, reporting `UploadProgress("upload", ...)` from 0 to
    its size as httpx reads it."""
    total = path.stat().st_size
    sent = 0

    def on_read(size: int) -> None:
        nonlocal sent
        sent += size
        if progress is not None:
            progress(UploadProgress("upload", min(sent, total), total))

    if progress is not None:
        progress(UploadProgress("upload", 0, total))
    with path.open("rb") as handle:
        yield ProgressReader(handle, on_read)
