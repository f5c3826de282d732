"""Encryption at rest: AES-256-GCM keys, and a chunked file format that streams.

A file is encrypted in chunks, so multi-gigabyte weights never have to fit in memory, and
each chunk is authenticated on its own. Format version 1 (integers big-endian)::

    header   = MAGIC (8 bytes) | version (1) | chunk_bytes (4) | key_id (8) | salt (16)
    chunk i  = AES-256-GCM(file_key, nonce_i, plaintext_i, aad=header)  # plaintext + 16-byte tag
    file_key = HKDF-SHA256(key, salt=salt, info=FILE_KEY_INFO)           # fresh for every file
    nonce_i  = i as 11 bytes | 0x01 for the last chunk, else 0x00

This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015), as `age` uses it: the
per-file key makes counter nonces safe (no nonce is ever used twice under one key), the chunk
index in the nonce detects reordering, the last-chunk flag detects truncation and appended
data, and the header as associated data detects edits to it. Every chunk but the last holds
exactly `chunk_bytes` of plaintext; the last holds the rest, and is empty only for an empty
file.

The key id (an HMAC of a constant under the key) is in every header, so a file encrypted with
another key is named as such before any decryption is tried.

Example::

    key = EncryptionKey.generate()
    with path.open("wb") as raw, EncryptingWriter(raw, key) as out:
        out.write(b"weights")
    with open_plaintext(path, Keyring(key)) as plain:
        plain.read()  # -> b"weights"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import logging
import os
import struct
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from openmaas.errors import ArtifactCorrupted, EncryptionKeyError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from openmaas.settings import Settings

log = logging.getLogger(__name__)

KEY_BYTES = 32  # AES-256
KEY_ID_BYTES = 8
SALT_BYTES = 16
TAG_BYTES = 16
MAGIC = b"\x89OMENC\r\n"  # PNG-style: a high byte and CR LF catch text-mode mangling
FORMAT_VERSION = 1
_HEADER = struct.Struct(f">8sBI{KEY_ID_BYTES}s{SALT_BYTES}s")
HEADER_BYTES = _HEADER.size  # 37
CHUNK_BYTES = 1024 * 1024  # plaintext per chunk: large enough that per-call overhead vanishes
MAX_CHUNK_BYTES = 64 * 1024 * 1024  # refuse headers that would make a reader allocate more
FILE_KEY_INFO = b"openmaas artifact file key v1"
KEY_ID_INFO = b"openmaas key id v1"
_LAST = b"\x01"
_NOT_LAST = b"\x00"
KEY_SETTINGS_HINT = "OPENMAAS_ENCRYPTION_KEY or OPENMAAS_ENCRYPTION_KEY_FILE"


# -- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptionKey:
    """A 32-byte AES-256 key. Its text form is base64; `key_id` names it without revealing it.

    Example::

        key = EncryptionKey.from_text(os.environ["OPENMAAS_ENCRYPTION_KEY"], origin="...")
        key.key_id  # -> "3f9c0a7d12e4b658"
    """

    secret: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise EncryptionKeyError(
                f"an encryption key is {KEY_BYTES} bytes, got {len(self.secret)}",
                code="encryption_key_invalid",
            )
        digest = hmac.new(self.secret, KEY_ID_INFO, hashlib.sha256).digest()
        object.__setattr__(self, "key_id", digest[:KEY_ID_BYTES].hex())

    @classmethod
    def generate(cls) -> EncryptionKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, *, origin: str) -> EncryptionKey:
        """Parse base64 (standard or URL-safe alphabet). `origin` names where the text came
        from in errors; the text itself is never repeated."""
        cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
        try:
            secret = base64.b64decode(cleaned, validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(
                f"{origin} is not base64; create a key with `openmaas admin generate-key`",
                code="encryption_key_invalid",
            ) from None
        if len(secret) != KEY_BYTES:
            raise EncryptionKeyError(
                f"{origin} decodes to {len(secret)} bytes, but an AES-256 key is "
                f"{KEY_BYTES} bytes; create a key with `openmaas admin generate-key`",
                code="encryption_key_invalid",
            )
        return cls(secret)

    @classmethod
    def from_file(cls, path: Path) -> EncryptionKey:
        try:
            text = path.read_text(encoding="ascii")
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise EncryptionKeyError(
                f"cannot read the encryption key file {path}: {reason}",
                code="encryption_key_invalid",
            ) from None
        if mode & 0o077:
            log.warning(
                "encryption key file %s can be read by other users (mode %o); chmod 600 it",
                path,
                mode & 0o777,
            )
        return cls.from_text(text, origin=f"the encryption key file {path}")

    def to_text(self) -> str:
        return base64.b64encode(self.secret).decode("ascii")


def load_key(text: str | None, key_file: Path | None) -> EncryptionKey | None:
    """The key from its text or its file (at most one of them); None when neither is set."""
    if text and key_file is not None:
        raise EncryptionKeyError(
            "set OPENMAAS_ENCRYPTION_KEY or OPENMAAS_ENCRYPTION_KEY_FILE, not both",
            code="encryption_key_invalid",
        )
    if key_file is not None:
        return EncryptionKey.from_file(key_file)
    if text:
        return EncryptionKey.from_text(text, origin="OPENMAAS_ENCRYPTION_KEY")
    return None


def key_from_settings(settings: Settings) -> EncryptionKey | None:
    secret = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    return load_key(secret, settings.encryption_key_file)


@dataclass(frozen=True, slots=True)
class Keyring:
    """The key new files are written with (None: written in plaintext), and the keys files may
    be read with. Key rotation reads with the old key and the new one at once.

    Example::

        Keyring(new_key, previous=(old_key,)).key_for(header.key_id, "config.json")
    """

    current: EncryptionKey | None = None
    previous: tuple[EncryptionKey, ...] = ()

    @property
    def encrypts(self) -> bool:
        return self.current is not None

    def key_for(self, key_id: str, name: str) -> EncryptionKey:
        """The key that opens a file whose header names `key_id`; a clear error otherwise."""
        for key in (self.current, *self.previous):
            if key is not None and key.key_id == key_id:
                return key
        if self.current is None and not self.previous:
            raise EncryptionKeyError(
                f"{name} is encrypted (key id {key_id}), but no encryption key is configured; "
                f"set {KEY_SETTINGS_HINT} to the key that encrypted the store",
                code="encryption_key_missing",
            )
        known = ", ".join(k.key_id for k in (self.current, *self.previous) if k is not None)
        raise EncryptionKeyError(
            f"{name} is encrypted with key id {key_id}, but the configured key has id {known}; "
            f"set {KEY_SETTINGS_HINT} to the key that encrypted the store (after an "
            "interrupted `openmaas admin rotate-key`, run it again to finish)",
            code="encryption_key_mismatch",
        )


# -- the format -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    chunk_bytes: int
    key_id: str
    salt: bytes
    raw: bytes  # authenticated with every chunk


def encrypted_size(plain_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Size on disk of an encrypted file holding `plain_bytes`."""
    chunks = max(1, -(-plain_bytes // chunk_bytes))
    return HEADER_BYTES + plain_bytes + chunks * TAG_BYTES


def _file_cipher(key: EncryptionKey, salt: bytes) -> AESGCM:
    file_key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=FILE_KEY_INFO)
    return AESGCM(file_key.derive(key.secret))


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (_LAST if last else _NOT_LAST)


def read_header(handle: IO[bytes], name: str) -> Header | None:
    """The header at the current position; None (and the position restored) for a file that
    does not start with the format's magic, i.e. a plaintext file."""
    start = handle.tell()
    raw = _read_full(handle, HEADER_BYTES)
    if raw[: len(MAGIC)] != MAGIC:
        handle.seek(start)
        return None
    if len(raw) < HEADER_BYTES:
        raise ArtifactCorrupted(f"{name}: the encrypted file's header is cut short")
    _, version, chunk_bytes, key_id, salt = _HEADER.unpack(raw)
    if version != FORMAT_VERSION:
        raise ArtifactCorrupted(
            f"{name}: encryption format version {version} is not supported (this server "
            f"reads version {FORMAT_VERSION}; was it written by a newer OpenMaaS?)"
        )
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ArtifactCorrupted(f"{name}: the encrypted file's header is damaged")
    return Header(chunk_bytes=chunk_bytes, key_id=key_id.hex(), salt=salt, raw=raw)


def peek_header(path: Path) -> Header | None:
    """The header of the file at `path`, None when it is plaintext."""
    with path.open("rb") as handle:
        return read_header(handle, path.name)


def decrypt_chunks(handle: IO[bytes], keys: Keyring, name: str) -> Generator[bytes, None, None]:
    """Plaintext of the file at the handle's position, chunk by chunk, each authenticated
    before it is yielded. A plaintext file (no header) is passed through unchanged.

    Raises `EncryptionKeyError` when no configured key opens it and `ArtifactCorrupted` when a
    chunk fails authentication (modified, truncated, reordered or extended).
    """
    header = read_header(handle, name)
    if header is None:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk
        return
    cipher = _file_cipher(keys.key_for(header.key_id, name), header.salt)
    sealed_bytes = header.chunk_bytes + TAG_BYTES
    current = _read_full(handle, sealed_bytes)
    index = 0
    while True:
        following = _read_full(handle, sealed_bytes)
        last = not following
        try:
            plain = cipher.decrypt(_nonce(index, last), current, header.raw)
        except InvalidTag:
            raise ArtifactCorrupted(
                f"{name}: encrypted chunk {index} fails authentication; the file was modified, "
                "truncated or reordered"
            ) from None
        yield plain
        if last:
            return
        current = following
        index += 1


def _read_full(handle: IO[bytes], size: int) -> bytes:
    data = handle.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]  # a short read before the end (pipes, sockets): keep reading
    remaining = size - len(data)
    while remaining and (more := handle.read(remaining)):
        parts.append(more)
        remaining -= len(more)
    return b"".join(parts)


class EncryptingWriter:
    """Encrypts what is written to it into `handle`; `close()` seals the last chunk.

    Only a closed writer leaves a complete file: one abandoned halfway fails authentication
    when read, as it should. Closing the writer does not close `handle`.
    """

    def __init__(
        self, handle: IO[bytes], key: EncryptionKey, *, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be 1..{MAX_CHUNK_BYTES}, got {chunk_bytes}")
        salt = os.urandom(SALT_BYTES)
        self._header = _HEADER.pack(
            MAGIC, FORMAT_VERSION, chunk_bytes, bytes.fromhex(key.key_id), salt
        )
        self._cipher = _file_cipher(key, salt)
        self._handle = handle
        self._chunk_bytes = chunk_bytes
        # One chunk-sized buffer for the whole file: no allocation per write.
        self._buffer = bytearray(chunk_bytes)
        self._filled = 0
        self._index = 0
        self._closed = False
        handle.write(self._header)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        chunk = self._chunk_bytes
        # A chunk is sealed only once more data follows it: the one that ends the file must
        # be sealed as the last. Full chunks are sealed straight from `data`, uncopied.
        if self._filled and self._filled + len(view) > chunk:
            needed = chunk - self._filled
            self._buffer[self._filled :] = view[:needed]
            view = view[needed:]
            self._seal(self._buffer, last=False)
            self._filled = 0
        while len(view) > chunk:
            self._seal(view[:chunk], last=False)
            view = view[chunk:]
        self._buffer[self._filled : self._filled + len(view)] = view
        self._filled += len(view)
        return size

    def close(self) -> None:
        if self._closed:
            return
        with memoryview(self._buffer) as buffer:
            self._seal(buffer[: self._filled], last=True)
        self._closed = True

    def _seal(self, plain: bytearray | memoryview, *, last: bool) -> None:
        self._handle.write(self._cipher.encrypt(_nonce(self._index, last), plain, self._header))
        self._index += 1

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True  # leave the file unsealed: it must not read as complete


class _DecryptingRaw(io.RawIOBase):
    def __init__(self, handle: IO[bytes], keys: Keyring, name: str) -> None:
        self._handle = handle
        self._chunks = decrypt_chunks(handle, keys, name)
        # The first chunk now, so a missing or wrong key fails on open, not at the first read.
        self._buffer = memoryview(next(self._chunks, b""))

    def readable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        out = memoryview(target).cast("B")
        size = min(len(out), len(self._buffer))
        out[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._chunks.close()
            self._handle.close()
        super().close()


def open_plaintext(path: Path, keys: Keyring, *, name: str | None = None) -> BinaryIO:
    """A read-only binary stream of the file's plaintext, whether it is stored encrypted or
    not. The header (and the key) are checked here; each chunk as it is read. `name` is how
    errors call the file (default: its file name)."""
    handle = path.open("rb")
    try:
        raw = _DecryptingRaw(handle, keys, name or path.name)
    except BaseException:
        handle.close()
        raise
    return io.BufferedReader(raw, buffer_size=CHUNK_BYTES)
