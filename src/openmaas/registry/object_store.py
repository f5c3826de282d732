"""The artifact store on object storage (`s3://bucket/prefix`): the bucket holds every file,
a local directory caches what this process reads.

`S3ArtifactStore` is the local `ArtifactStore` whose root is a *cache* of the bucket, plus
the bucket itself: every file the store writes (a published version, a dataset, a job's
blob) is uploaded under the same relative name, and every file it reads is first brought up
to date from the bucket. So staging, hashing, encryption at rest and verification are the
local store's own code, and a loader still gets a directory on disk.

- **Atomic publish.** S3 has no rename: a version's files are uploaded under a fresh
  `objects/<id>/` prefix that nothing references yet; the registry's database row, written
  after the upload, is what makes it visible (each single object PUT is atomic). What an
  interrupted upload leaves is swept on start, like the local store's `staging/`.
- **Verification.** Opening a version lists its prefix (one LIST) and downloads every file
  whose ETag differs from the cached one, then re-hashes against the manifest: bytes changed
  in the bucket are refused by file name, as on disk.
- **Encryption at rest.** The bytes uploaded are the ciphertext the local store writes; the
  cache holds ciphertext too. Decrypted copies go where the local store puts them.
- **Big files** go up in parts (`part_bytes`, 16 MiB by default): a file of two parts or
  more is a multipart upload.

Endpoint, region and credentials come from the usual AWS sources (`AWS_ENDPOINT_URL`,
`AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance or
pod identity); `storage_options` overrides them (tests).

Example::

    store = S3ArtifactStore("s3://models/prod", Path(".openmaas/artifact-cache"), keys)
    store.start()  # checks the bucket
    location = store.publish(store.stage_files(walk_directory(Path("my-model"))))
    directory = store.path_of(location)  # the cached copy, refreshed from the bucket
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from openmaas.crypto import Keyring
from openmaas.errors import NotFound, ObjectStoreError
from openmaas.registry.artifacts import (
    ORPHAN_GRACE_S,
    PART_SUFFIX,
    READ_ONLY,
    REKEY_TEMP_NAME,
    ArtifactStore,
    Progress,
    StagedArtifact,
)
from openmaas.registry.entities import FileEntry

# Files of two parts or more go up as multipart uploads (S3's smallest part is 5 MiB).
PART_BYTES = 16 * 1024 * 1024
# Under the cache root: the bucket's ETag of each cached file, so an unchanged file is not
# downloaded again (a name `_blob_path` refuses, so no blob key can reach it).
ETAGS_DIR = ".remote-etags"
OBJECTS = "objects"


class S3ArtifactStore(ArtifactStore):
    """The artifact store in an S3 bucket (any S3 API: AWS, MinIO, moto), with a local cache.

    Example::

        store = S3ArtifactStore("s3://bucket/openmaas", cache_dir, Keyring(key))
        store.put_bytes("jobs/ftjob-1/ckpt-1/state.json", b"{}")  # in the bucket
        store.list_keys("jobs/ftjob-1")  # -> ["jobs/ftjob-1/ckpt-1/state.json"]
    """

    def __init__(
        self,
        url: str,
        cache_root: Path,
        keys: Keyring | None = None,
        *,
        scratch_dirs: tuple[Path, ...] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        filesystem: Any | None = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        super().__init__(cache_root, keys, scratch_dirs=scratch_dirs)
        scheme, _, rest = url.partition("://")
        if scheme != "s3" or not rest.strip("/"):
            raise ObjectStoreError(f"{url!r} is not an s3://BUCKET[/PREFIX] URL")
        self.url = url
        self.base = rest.strip("/")
        self.bucket = self.base.split("/")[0]
        self.part_bytes = part_bytes
        self.etags_dir = cache_root / ETAGS_DIR
        # An fsspec S3 filesystem (s3fs); one may be shared by several stores.
        self.fs = filesystem if filesystem is not None else _filesystem(storage_options)

    def start(self) -> None:
        super().start()
        try:
            found = self.fs.exists(self.bucket)
        except Exception as exc:  # botocore's errors: credentials, endpoint, permissions
            raise ObjectStoreError(
                f"the object store of OPENMAAS_ARTIFACTS_URL ({self.url}) is not reachable: "
                f"{exc}; check AWS_ENDPOINT_URL, the region and the credentials"
            ) from exc
        if not found:
            raise ObjectStoreError(
                f"bucket {self.bucket!r} of OPENMAAS_ARTIFACTS_URL does not exist or these "
                "credentials cannot see it: create it, or point the URL at one that exists"
            )

    # -- files written through a path (datasets, job outputs) ----------------------------

    def write_stream(
        self, source: IO[bytes], target: Path, progress: Progress | None = None
    ) -> FileEntry:
        entry = super().write_stream(source, target, progress)
        if self._mirrored(target):
            self._push(target)
        return entry

    def open_plaintext(self, path: Path, *, name: str | None = None) -> BinaryIO:
        if self._mirrored(path) and not path.is_file():
            self._refresh(path)
        return super().open_plaintext(path, name=name)

    def is_encrypted(self, path: Path) -> bool:
        if self._mirrored(path) and not path.is_file():
            self._refresh(path)
        return super().is_encrypted(path)

    def remove_tree(self, path: Path) -> None:
        super().remove_tree(path)
        if self._mirrored(path):
            self._delete_remote(self._rel(path))

    # -- published versions ---------------------------------------------------------------

    def publish(self, staged: StagedArtifact) -> str:
        rel_dir = f"{OBJECTS}/{staged.path.name}"
        try:
            for entry in staged.files:
                self._upload(staged.path / entry.path, f"{rel_dir}/{entry.path}")
        except BaseException:
            self._delete_remote(rel_dir)
            raise
        for rel, info in self._listing(rel_dir).items():
            self._remember(rel, _etag(info))
        return super().publish(staged)

    def path_of(self, key: str) -> Path:
        """The cached directory of a published version, brought up to date with the bucket
        first (files changed there are downloaded again, files gone there removed here), so
        what is verified or loaded is what the bucket holds."""
        self._sync_tree(f"{OBJECTS}/{key}")
        return super().path_of(key)

    def remove(self, key: str) -> None:
        super().remove(key)
        self._delete_remote(f"{OBJECTS}/{key}")

    def sweep_orphans(self, referenced: set[str], *, grace_s: float = ORPHAN_GRACE_S) -> list[str]:
        """The local store's sweep over the cache, and in the bucket every `objects/<id>/`
        prefix no version references whose newest file is older than `grace_s`."""
        removed = super().sweep_orphans(referenced, grace_s=grace_s)
        newest: dict[str, float] = {}
        for rel, info in self._listing(OBJECTS).items():
            key = rel.split("/")[1]
            newest[key] = max(newest.get(key, 0.0), _modified(info))
        now = time.time()
        for key, modified in sorted(newest.items()):
            if key not in referenced and now - modified >= grace_s:
                self._delete_remote(f"{OBJECTS}/{key}")
                removed.append(f"{OBJECTS}/{key}")
        return sorted(set(removed))

    # -- blobs by key --------------------------------------------------------------------

    def put_stream(self, key: str, source: IO[bytes]) -> FileEntry:
        entry = super().put_stream(key, source)
        path = self._blob_path(key)
        try:
            self._push(path)
        except BaseException:
            # The bucket keeps what it had; so must the cache.
            path.unlink(missing_ok=True)
            self._forget(self._rel(path))
            raise
        return entry

    def open_blob(self, key: str) -> BinaryIO:
        path = self._blob_path(key)
        self._refresh(path, name=key)
        return super().open_plaintext(path, name=key)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._rel(self._blob_path(prefix))
        return sorted(self._listing(base))

    def delete_prefix(self, prefix: str) -> None:
        super().delete_prefix(prefix)
        self._delete_remote(self._rel(self._blob_path(prefix)))

    # -- key rotation ------------------------------------------------------------------------

    def stored_files(self) -> Iterator[Path]:
        self._sync_tree(OBJECTS)
        yield from super().stored_files()

    def area_files(self, area: str) -> list[Path]:
        self._sync_tree(area)
        return super().area_files(area)

    def rekey_file(
        self,
        path: Path,
        keys: Keyring,
        *,
        expected: FileEntry | None = None,
        progress: Progress | None = None,
    ) -> bool:
        changed = super().rekey_file(path, keys, expected=expected, progress=progress)
        if changed and self._mirrored(path):
            self._push(path)
        return changed

    # -- the bucket ----------------------------------------------------------------------

    def _remote(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _mirrored(self, path: Path) -> bool:
        """Whether `path` is a cached copy of a file in the bucket (not staging, not the
        cache's own bookkeeping, not a half-written file)."""
        if not path.is_relative_to(self.root) or path == self.root:
            return False
        if path.is_relative_to(self.staging_dir) or path.is_relative_to(self.etags_dir):
            return False
        return not (path.name.endswith(PART_SUFFIX) or path.name == REKEY_TEMP_NAME)

    def _upload(self, local: Path, rel: str) -> None:
        # s3fs uploads a file of two chunks or more as a multipart upload.
        self.fs.put_file(str(local), self._remote(rel), chunksize=self.part_bytes)

    def _push(self, path: Path) -> None:
        rel = self._rel(path)
        self._upload(path, rel)
        self._remember(rel, _etag(self.fs.info(self._remote(rel))))

    def _listing(self, rel_dir: str) -> dict[str, dict[str, Any]]:
        """{relative name: object info} of every object under `rel_dir/` in the bucket."""
        prefix = self._remote(rel_dir.strip("/")) + "/"
        try:
            found = self.fs.find(prefix, detail=True)
        except FileNotFoundError:
            return {}
        base = self.base + "/"
        return {
            name.removeprefix(base): info
            for name, info in found.items()
            if name.startswith(prefix) and info.get("type", "file") == "file"
        }

    def _refresh(self, path: Path, *, name: str | None = None) -> None:
        """Bring one cached file up to date with the bucket; NotFound when it has none."""
        rel = self._rel(path)
        try:
            info = self.fs.info(self._remote(rel))
        except FileNotFoundError:
            info = None
        if info is None or info.get("type") != "file":
            path.unlink(missing_ok=True)
            self._forget(rel)
            raise NotFound(f"artifact {name or rel!r} not found")
        self._download(rel, info)

    def _sync_tree(self, rel_dir: str) -> None:
        remote = self._listing(rel_dir)
        local_dir = self.root / rel_dir
        if local_dir.is_dir():
            for path in local_dir.rglob("*"):
                rel = self._rel(path)
                if path.is_file() and rel not in remote and self._mirrored(path):
                    path.unlink(missing_ok=True)
                    self._forget(rel)
        for rel, info in sorted(remote.items()):
            self._download(rel, info)

    def _download(self, rel: str, info: Mapping[str, Any]) -> None:
        local = self.root / rel
        etag = _etag(info)
        if local.is_file() and self._known(rel) == etag:
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(f"{local.name}.{uuid.uuid4().hex}{PART_SUFFIX}")
        try:
            self.fs.get_file(self._remote(rel), str(part))
            if local.is_relative_to(self.objects_dir):
                part.chmod(READ_ONLY)  # as published: a version's bytes never change
            os.replace(part, local)
        finally:
            part.unlink(missing_ok=True)
        self._remember(rel, etag)

    def _delete_remote(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._remote(rel), recursive=True)
        self._forget(rel)

    def _remember(self, rel: str, etag: str) -> None:
        record = self.etags_dir / rel
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(etag, encoding="ascii")

    def _known(self, rel: str) -> str | None:
        try:
            return (self.etags_dir / rel).read_text(encoding="ascii")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _forget(self, rel: str) -> None:
        record = self.etags_dir / rel
        if record.is_dir():
            shutil.rmtree(record, ignore_errors=True)
        else:
            record.unlink(missing_ok=True)


def s3_filesystem(options: Mapping[str, Any] | None = None) -> Any:
    """An s3fs filesystem that sees every change at once (no listing cache)."""
    return _filesystem(options)


def _filesystem(options: Mapping[str, Any] | None) -> Any:
    try:
        import s3fs  # type: ignore[import-untyped]  # an optional extra: openmaas[s3]
    except ImportError as exc:
        raise ObjectStoreError(
            "OPENMAAS_ARTIFACTS_URL names an s3:// store but s3fs is not installed: "
            "pip install 'openmaas[s3]'"
        ) from exc
    # No instance or listing cache: another process (a worker, another replica) changes the
    # bucket, and every listing must see it.
    return s3fs.S3FileSystem(
        skip_instance_cache=True, use_listings_cache=False, **dict(options or {})
    )


def _etag(info: Mapping[str, Any]) -> str:
    return str(info.get("ETag") or info.get("etag") or "").strip('"')


def _modified(info: Mapping[str, Any]) -> float:
    value = info.get("LastModified")
    return value.timestamp() if isinstance(value, datetime) else 0.0
