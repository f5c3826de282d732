"""The encryption-at-rest format: round trips at every chunk boundary, bounded memory on a large
file, and every kind of tampering (edits, truncation, reordering, splicing, appending) detected;
keys parsed strictly and named, never shown."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from openmaas import crypto
from openmaas.crypto import (
    HEADER_BYTES,
    TAG_BYTES,
    EncryptingWriter,
    EncryptionKey,
    Keyring,
    decrypt_chunks,
    encrypted_size,
    load_key,
    open_plaintext,
    peek_header,
)
from openmaas.errors import ArtifactCorrupted, EncryptionKeyError

CHUNK = 64  # small chunks so boundaries are cheap to reach


def seal(data: bytes, key: EncryptionKey, chunk_bytes: int = CHUNK, *, piece: int = 7) -> bytes:
    buffer = io.BytesIO()
    with EncryptingWriter(buffer, key, chunk_bytes=chunk_bytes) as writer:
        for start in range(0, len(data), piece):  # odd-sized writes straddle chunks
            writer.write(data[start : start + piece])
    return buffer.getvalue()


def unseal(sealed: bytes, keys: Keyring) -> bytes:
    return b"".join(decrypt_chunks(io.BytesIO(sealed), keys, "weights.bin"))


def chunks_of(sealed: bytes, chunk_bytes: int = CHUNK) -> list[bytes]:
    body = sealed[HEADER_BYTES:]
    size = chunk_bytes + TAG_BYTES
    return [body[i : i + size] for i in range(0, len(body), size)]


@pytest.fixture
def key() -> EncryptionKey:
    return EncryptionKey.generate()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * CHUNK + 3])
def test_round_trip_at_chunk_boundaries(key: EncryptionKey, size: int) -> None:
    data = os.urandom(size)
    sealed = seal(data, key)
    assert len(sealed) == encrypted_size(size, CHUNK)
    assert unseal(sealed, Keyring(key)) == data


def test_ciphertext_hides_the_plaintext_and_differs_every_time(key: EncryptionKey) -> None:
    data = b'{"architectures": ["BertModel"], "hidden_size": 32}' * 20
    first, second = seal(data, key), seal(data, key)
    assert b"BertModel" not in first
    assert first != second  # a fresh salt, so a fresh file key, per file


def test_large_file_streams_in_bounded_memory(tmp_path: Path, key: EncryptionKey) -> None:
    size = 48 * crypto.CHUNK_BYTES + 12_345
    block = hashlib.sha256(b"seed").digest() * (crypto.CHUNK_BYTES // 32)
    path = tmp_path / "big.safetensors"
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with path.open("wb") as raw, EncryptingWriter(raw, key) as writer:
            written = 0
            while written < size:
                part = block[: size - written]
                writer.write(part)
                digest.update(part)
                written += len(part)
        largest = 0
        check = hashlib.sha256()
        with path.open("rb") as raw:
            for chunk in decrypt_chunks(raw, Keyring(key), path.name):
                largest = max(largest, len(chunk))
                check.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == encrypted_size(size)
    assert check.hexdigest() == digest.hexdigest()
    assert largest == crypto.CHUNK_BYTES
    # A few chunks in flight at most, never the 48 MiB file.
    assert peak < 8 * crypto.CHUNK_BYTES


def test_open_plaintext_reads_like_a_file(tmp_path: Path, key: EncryptionKey) -> None:
    lines = b"".join(f'{{"text": "row {i}"}}\n'.encode() for i in range(500))
    path = tmp_path / "train.jsonl"
    path.write_bytes(seal(lines, key, chunk_bytes=100))
    with open_plaintext(path, Keyring(key)) as rows:
        assert rows.readline() == b'{"text": "row 0"}\n'
        assert rows.read(5) == b'{"tex'
        assert rows.read() == lines[len(b'{"text": "row 0"}\n') + 5 :]
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(lines)
    with open_plaintext(plain, Keyring(key)) as rows:  # plaintext passes through
        assert rows.read() == lines


# -- tampering ---------------------------------------------------------------------------------


def test_a_flipped_bit_anywhere_is_detected(key: EncryptionKey) -> None:
    sealed = bytearray(seal(os.urandom(4 * CHUNK), key))
    body_positions = [HEADER_BYTES, HEADER_BYTES + CHUNK + TAG_BYTES + 5, len(sealed) - 1]
    for position in body_positions:
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(ArtifactCorrupted, match="fails authentication"):
            unseal(bytes(tampered), Keyring(key))


def test_header_edits_are_detected(key: EncryptionKey) -> None:
    sealed = seal(os.urandom(2 * CHUNK), key)
    salt_byte = HEADER_BYTES - 1
    tampered = bytearray(sealed)
    tampered[salt_byte] ^= 0x80
    with pytest.raises(ArtifactCorrupted):
        unseal(bytes(tampered), Keyring(key))
    version = bytearray(sealed)
    version[len(crypto.MAGIC)] = 9
    with pytest.raises(ArtifactCorrupted, match="format version 9"):
        unseal(bytes(version), Keyring(key))


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(
            lambda s: s[: HEADER_BYTES + 2 * (CHUNK + TAG_BYTES)], id="at-a-chunk-boundary"
        ),
        pytest.param(lambda s: s[:-10], id="inside-the-last-chunk"),
        pytest.param(lambda s: s[:HEADER_BYTES], id="all-chunks-gone"),
        pytest.param(lambda s: s[: HEADER_BYTES - 3], id="inside-the-header"),
    ],
)
def test_truncation_is_detected(key: EncryptionKey, cut: Callable[[bytes], bytes]) -> None:
    sealed = seal(os.urandom(4 * CHUNK + 9), key)
    with pytest.raises(ArtifactCorrupted):
        unseal(cut(sealed), Keyring(key))


def test_reordered_dropped_and_appended_chunks_are_detected(key: EncryptionKey) -> None:
    sealed = seal(os.urandom(4 * CHUNK + 9), key)
    header, chunks = sealed[:HEADER_BYTES], chunks_of(sealed)
    swapped = header + chunks[1] + chunks[0] + b"".join(chunks[2:])
    dropped = header + chunks[0] + b"".join(chunks[2:])
    appended = sealed + chunks[-1]
    for variant in (swapped, dropped, appended):
        with pytest.raises(ArtifactCorrupted, match="modified, truncated or reordered"):
            unseal(variant, Keyring(key))


def test_chunks_spliced_from_another_file_are_detected(key: EncryptionKey) -> None:
    first = seal(os.urandom(3 * CHUNK), key)
    second = seal(os.urandom(3 * CHUNK), key)
    spliced = first[:HEADER_BYTES] + chunks_of(second)[0] + b"".join(chunks_of(first)[1:])
    with pytest.raises(ArtifactCorrupted):
        unseal(spliced, Keyring(key))


def test_an_unsealed_file_never_reads_as_complete(key: EncryptionKey) -> None:
    buffer = io.BytesIO()

    def upload_breaks_off() -> None:
        with EncryptingWriter(buffer, key, chunk_bytes=CHUNK) as writer:
            writer.write(os.urandom(3 * CHUNK))
            raise ConnectionError("the upload broke off")

    with pytest.raises(ConnectionError):
        upload_breaks_off()
    with pytest.raises(ArtifactCorrupted):
        unseal(buffer.getvalue(), Keyring(key))


# -- keys --------------------------------------------------------------------------------------


def test_a_wrong_key_is_named_before_any_decryption(tmp_path: Path, key: EncryptionKey) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(seal(b"{}", key))
    other = EncryptionKey.generate()
    with pytest.raises(EncryptionKeyError) as wrong:
        open_plaintext(path, Keyring(other))
    assert wrong.value.code == "encryption_key_mismatch"
    assert key.key_id in wrong.value.message
    assert other.key_id in wrong.value.message
    assert "config.json" in wrong.value.message
    with pytest.raises(EncryptionKeyError) as missing:
        open_plaintext(path, Keyring())
    assert missing.value.code == "encryption_key_missing"
    assert "OPENMAAS_ENCRYPTION_KEY" in missing.value.message
    header = peek_header(path)
    assert header is not None
    assert header.key_id == key.key_id


def test_a_keyring_reads_with_previous_keys_and_writes_with_the_current(
    key: EncryptionKey,
) -> None:
    old_file = seal(b"old weights", key)
    new = EncryptionKey.generate()
    rotating = Keyring(new, previous=(key,))
    assert unseal(old_file, rotating) == b"old weights"
    assert rotating.current is new


def test_key_text_forms(key: EncryptionKey) -> None:
    standard = key.to_text()
    urlsafe = base64.urlsafe_b64encode(key.secret).decode()
    wrapped = f"  {standard[:20]}\n{standard[20:]}\n"
    for text in (standard, urlsafe, wrapped):
        assert EncryptionKey.from_text(text, origin="test").key_id == key.key_id
    assert key.secret.hex() not in repr(key)
    assert standard not in repr(key)
    assert EncryptionKey.generate().key_id != key.key_id


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not base64 at all!", "is not base64"),
        # Fixed bytes: a random value would give each test process its own test id.
        (base64.b64encode(bytes(range(16))).decode(), "decodes to 16 bytes"),
        ("", "decodes to 0 bytes"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_them(text: str, fragment: str) -> None:
    with pytest.raises(EncryptionKeyError) as refused:
        EncryptionKey.from_text(text, origin="OPENMAAS_ENCRYPTION_KEY")
    assert refused.value.code == "encryption_key_invalid"
    assert fragment in refused.value.message
    assert "OPENMAAS_ENCRYPTION_KEY" in refused.value.message
    assert "generate-key" in refused.value.message
    if text:
        assert text not in refused.value.message


def test_load_key_from_setting_or_file(
    tmp_path: Path, key: EncryptionKey, caplog: pytest.LogCaptureFixture
) -> None:
    assert load_key(None, None) is None
    assert load_key("", None) is None
    loaded = load_key(key.to_text(), None)
    assert loaded is not None
    assert loaded.key_id == key.key_id
    key_file = tmp_path / "key"
    key_file.write_text(key.to_text() + "\n")
    key_file.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="openmaas.crypto"):
        from_file = load_key(None, key_file)
    assert from_file is not None
    assert from_file.key_id == key.key_id
    assert not caplog.records
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="openmaas.crypto"):
        load_key(None, key_file)
    assert "chmod 600" in caplog.text
    with pytest.raises(EncryptionKeyError, match="not both"):
        load_key(key.to_text(), key_file)
    with pytest.raises(EncryptionKeyError, match="cannot read the encryption key file"):
        load_key(None, tmp_path / "missing")
