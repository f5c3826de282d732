"""Safe intake: which files may enter the registry, and how archives are unpacked.

Pickle-based files run arbitrary code when loaded, so they are refused unless the operator
opts in with `OPENMAAS_ALLOW_PICKLE=true`. Detection looks at content, not only at names:
a `.bin` is fine when it is a CTranslate2 model and refused when it is a torch pickle.
"""

from __future__ import annotations

import ast
import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from openmaas.errors import PayloadTooLarge, UnsafeArtifact

# Names that are never part of a model (VCS and tool caches), shared with the SDK's packing.
from openmaas.protocol.registry import SKIPPED_NAMES

PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt"})
ALLOW_PICKLE_HINT = (
    "set OPENMAAS_ALLOW_PICKLE=true on the server to accept pickles from sources you trust, "
    "or convert the weights to safetensors"
)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def pickle_reason(rel_path: str, head: bytes, open_file: Path | None = None) -> str | None:
    """Why a file is pickle-based, or None when it is not.

    `head` is the file's first bytes (16 are enough); `open_file` lets zip containers
    (torch's zip format, `.npz`) be inspected member by member.
    """
    suffix = PurePosixPath(rel_path).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return f"{suffix} files are pickles"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and not _safetensors(suffix, head):
        return "the file is a binary pickle stream"
    if head.startswith(_NPY_MAGIC) and _npy_holds_objects(head, open_file):
        return "the NumPy array holds Python objects (stored as a pickle)"
    if head.startswith(_ZIP_MAGIC) and open_file is not None:
        return _zip_pickle_reason(open_file)
    return None


def _safetensors(suffix: str, head: bytes) -> bool:
    """A .safetensors file: a little-endian u64 header length, then the JSON header. A length
    of 0x0380 (896 bytes of header) starts `80 03`, pickle's PROTO 3 opcode. Only the suffix
    exempts it, as only the safetensors reader (which never unpickles) opens such files."""
    return suffix == ".safetensors" and head[8:9] == b"{"


def _npy_holds_objects(head: bytes, path: Path | None) -> bool:
    if path is None:
        return False
    with path.open("rb") as handle:
        return _npy_header_has_objects(handle)


def _npy_header_has_objects(handle: IO[bytes]) -> bool:
    prefix = handle.read(10)
    if len(prefix) < 10:
        return False
    major = prefix[6]
    if major == 1:
        header_len = int.from_bytes(prefix[8:10], "little")
        header = handle.read(header_len)
    else:
        header_len = int.from_bytes(prefix[8:10] + handle.read(2), "little")
        header = handle.read(header_len)
    try:
        descr = ast.literal_eval(header.decode("latin-1").strip()).get("descr")
    except (ValueError, SyntaxError):
        return True  # unreadable header: treat as unsafe rather than guess
    return "O" in str(descr)


# A zip container (torch's format, `.npz`) inside a model is opened to look for pickles;
# `zipfile` reads its whole central directory first, so the entry count in the end record
# is checked before (a file of 200,000 empty entries is no model's weights).
MAX_ZIP_ENTRIES = 100_000


def zip_entry_count(path: Path) -> int | None:
    """The entry count a zip's end-of-central-directory record declares (zip64 included),
    read without parsing the directory; None when the file has no such record."""
    end_record = getattr(zipfile, "_EndRecData", None)  # the stdlib's own reader
    if end_record is None:  # pragma: no cover - present in every CPython 3
        return None
    with path.open("rb") as handle:
        record = end_record(handle)
    return int(record[4]) if record else None  # _ECD_ENTRIES_TOTAL


def _zip_pickle_reason(path: Path) -> str | None:
    entries = zip_entry_count(path)
    if entries is not None and entries > MAX_ZIP_ENTRIES:
        raise PayloadTooLarge(
            f"refused {path.name!r}: a zip container of {entries} entries (at most "
            f"{MAX_ZIP_ENTRIES}) is not a model file",
            param="file",
        )
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".pkl"):
                    return f"the zip container holds the pickle {name!r} (torch zip format)"
                if name.endswith(".npy"):
                    with archive.open(name) as member:
                        if _npy_header_has_objects(member):
                            return f"the array {name!r} holds Python objects (pickle)"
    except zipfile.BadZipFile:
        return None
    return None


def refuse_if_pickle(rel_path: str, path: Path, *, allow_pickle: bool) -> None:
    if allow_pickle:
        return
    with path.open("rb") as handle:
        head = handle.read(16)
    reason = pickle_reason(rel_path, head, path)
    if reason is not None:
        raise UnsafeArtifact(
            f"refused {rel_path!r}: {reason}, and pickles can run code when loaded; "
            f"{ALLOW_PICKLE_HINT}",
            param="source",
        )


def walk_directory(root: Path) -> dict[str, Path]:
    """Every regular file under `root` as {relative POSIX path: absolute path}.

    File symlinks are followed (a Hugging Face cache snapshot is made of them); directory
    symlinks are refused because they can loop or escape.
    """
    files: dict[str, Path] = {}
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        current = Path(dirpath)
        for name in list(dirnames):
            if name in SKIPPED_NAMES:
                dirnames.remove(name)
            elif (current / name).is_symlink():
                raise UnsafeArtifact(
                    f"refused {(current / name).relative_to(root).as_posix()!r}: "
                    "directory symlinks are not followed; copy the directory instead",
                    param="source",
                )
        for name in filenames:
            if name in SKIPPED_NAMES:
                continue
            path = current / name
            rel = path.relative_to(root).as_posix()
            if not path.is_file():
                raise UnsafeArtifact(f"refused {rel!r}: not a regular file", param="source")
            files[rel] = path
    return dict(sorted(files.items()))


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_total_bytes: int
    max_members: int
    # What one project may keep in the artifact store, all its versions together; 0: no
    # quota. Admins are not bound by it (issue 13: a 60 KiB upload became 60 MiB stored).
    project_storage_bytes: int = 0
    # The most a Hugging Face Hub registration may download; None: unbounded.
    max_hub_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class StorageBudget:
    """What a project may still store: `check` refuses (413, naming the quota) a registration
    that would take the project's stored bytes past it.

    Example::

        budget = StorageBudget("acme", quota_bytes=10 << 30, used_bytes=store.stored_bytes("acme"))
        budget.check(sum(sizes))  # PayloadTooLarge when over
    """

    project: str
    quota_bytes: int
    used_bytes: int

    def check(self, adding_bytes: int) -> None:
        if self.used_bytes + adding_bytes > self.quota_bytes:
            raise PayloadTooLarge(
                f"project {self.project!r} may store {_mib(self.quota_bytes)} "
                f"(OPENMAAS_PROJECT_STORAGE_QUOTA_MB); it stores {_mib(self.used_bytes)} and "
                f"this model needs at least {_mib(adding_bytes)} more. Delete versions it no "
                "longer needs, or ask an admin for a larger quota",
                param="file",
                code="storage_quota_exceeded",
            )


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def safe_member_path(name: str) -> str:
    """The member's path if it stays inside the extraction root; refuses anything else."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArtifact(f"refused archive entry {name!r}: absolute path", param="file")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if any(part == ".." for part in parts):
        raise UnsafeArtifact(
            f"refused archive entry {name!r}: '..' escapes the archive", param="file"
        )
    clean = [part for part in parts if part not in ("", ".")]
    if not clean:
        raise UnsafeArtifact(f"refused archive entry {name!r}: empty path", param="file")
    return "/".join(clean)


def iter_archive_files(
    archive: tarfile.TarFile, limits: ArchiveLimits, budget: StorageBudget | None = None
) -> Iterator[tuple[str, IO[bytes], int]]:
    """Yield (relative path, stream, size) for each regular file, enforcing every rule first.

    All members are checked before the first file is yielded, so a bad entry late in the
    archive refuses the whole archive before anything is written. Members are read one at a
    time and counted as they come (never `getmembers()`, which would read every header of a
    200,000-entry archive into memory before the count could refuse it); their unpacked
    sizes (exact in a tar header) are held to the limit and to the project's `budget`.
    """
    members = []
    total = 0
    for count, member in enumerate(archive, start=1):
        if count > limits.max_members:
            raise PayloadTooLarge(
                f"archive has more than {limits.max_members} entries (OPENMAAS_MAX_ARCHIVE_MEMBERS)"
            )
        path = safe_member_path(member.name)
        if member.issym() or member.islnk():
            raise UnsafeArtifact(
                f"refused archive entry {member.name!r}: links are not allowed in model archives"
            )
        if member.isdir():
            continue
        if not member.isfile():
            raise UnsafeArtifact(
                f"refused archive entry {member.name!r}: only regular files and directories "
                "are allowed"
            )
        if (
            PurePosixPath(path).parts[0] in SKIPPED_NAMES
            or PurePosixPath(path).name in SKIPPED_NAMES
        ):
            continue
        total += member.size
        if total > limits.max_total_bytes:
            raise PayloadTooLarge(
                f"archive unpacks to more than {limits.max_total_bytes // (1024 * 1024)} MiB "
                "(OPENMAAS_MAX_EXTRACTED_MB)"
            )
        if budget is not None:
            budget.check(total)
        members.append((path, member))
    paths = [path for path, _ in members]
    if len(set(paths)) != len(paths):
        raise UnsafeArtifact("refused archive: it lists the same file twice")
    prefix = _common_top_directory(paths)
    for path, member in members:
        stream = archive.extractfile(member)
        if stream is None:  # pragma: no cover - isfile() members always have data
            continue
        yield path[len(prefix) :], stream, member.size


def _common_top_directory(paths: list[str]) -> str:
    """`model/` when every file sits under one top directory (as `tar czf x.tgz model` makes)."""
    if not paths:
        return ""
    tops = {PurePosixPath(p).parts[0] for p in paths}
    if len(tops) == 1 and all(len(PurePosixPath(p).parts) > 1 for p in paths):
        return tops.pop() + "/"
    return ""


def open_archive(source: Path | IO[bytes]) -> tarfile.TarFile:
    try:
        if isinstance(source, Path):
            return tarfile.open(source, mode="r:*")
        return tarfile.open(fileobj=source, mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeArtifact(
            f"the upload is not a readable .tar.gz/.tar archive ({exc.__class__.__name__})",
            param="file",
        ) from exc
