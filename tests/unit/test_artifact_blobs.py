"""The artifact store's key-based blob interface, what jobs store checkpoints through: atomic
writes, listing by prefix, removal, encryption at rest, and keys that cannot escape the store
or reach the registry's own layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.crypto import EncryptionKey, Keyring
from openmaas.errors import InvalidRequest, NotFound
from openmaas.registry.artifacts import PART_SUFFIX, ArtifactStore


@pytest.fixture(params=["plaintext", "encrypted"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    keys = Keyring(EncryptionKey.generate()) if request.param == "encrypted" else Keyring()
    artifacts = ArtifactStore(tmp_path / "artifacts", keys)
    artifacts.start()
    return artifacts


def test_blobs_round_trip_by_key_and_list_by_prefix(store: ArtifactStore, tmp_path: Path) -> None:
    local = tmp_path / "state.json"
    local.write_bytes(b'{"step": 3}')
    entry = store.put_file("jobs/ftjob-1/ckpt-a/state.json", local)
    store.put_bytes("jobs/ftjob-1/ckpt-a/nested/weights.bin", b"\x00" * 10)
    store.put_bytes("jobs/ftjob-2/ckpt-b/state.json", b"other")

    assert (entry.path, entry.size) == ("jobs/ftjob-1/ckpt-a/state.json", 11)
    assert store.get_bytes("jobs/ftjob-1/ckpt-a/state.json") == b'{"step": 3}'
    assert store.list_keys("jobs/ftjob-1") == [
        "jobs/ftjob-1/ckpt-a/nested/weights.bin",
        "jobs/ftjob-1/ckpt-a/state.json",
    ]
    assert store.list_keys("jobs/ftjob-9") == []
    copy = tmp_path / "restored" / "weights.bin"
    store.fetch_to("jobs/ftjob-1/ckpt-a/nested/weights.bin", copy)
    assert copy.read_bytes() == b"\x00" * 10

    store.delete_prefix("jobs/ftjob-1")
    assert store.list_keys("jobs/ftjob-1") == []
    assert store.get_bytes("jobs/ftjob-2/ckpt-b/state.json") == b"other"
    with pytest.raises(NotFound):
        store.get_bytes("jobs/ftjob-1/ckpt-a/state.json")


def test_a_blob_is_replaced_whole_and_leaves_no_partial_file(store: ArtifactStore) -> None:
    store.put_bytes("jobs/j/state.json", b"first")
    store.put_bytes("jobs/j/state.json", b"second, longer")
    assert store.get_bytes("jobs/j/state.json") == b"second, longer"
    assert not list(store.root.rglob(f"*{PART_SUFFIX}"))


def test_a_failed_write_leaves_the_old_blob_and_no_partial_file(store: ArtifactStore) -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError("disk went away")
            return b"half"

    store.put_bytes("jobs/j/state.json", b"kept")
    with pytest.raises(OSError, match="disk went away"):
        store.put_stream("jobs/j/state.json", Broken())  # type: ignore[arg-type]
    assert store.get_bytes("jobs/j/state.json") == b"kept"
    assert not list(store.root.rglob(f"*{PART_SUFFIX}"))


def test_blobs_are_encrypted_at_rest_when_the_store_encrypts(store: ArtifactStore) -> None:
    store.put_bytes("jobs/j/secret.txt", b"plain words")
    on_disk = (store.root / "jobs" / "j" / "secret.txt").read_bytes()
    assert (b"plain words" in on_disk) is not store.encrypts
    assert store.get_bytes("jobs/j/secret.txt") == b"plain words"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "jobs/../objects/x",
        "jobs/./x",
        "objects/abc/file",
        "staging/x",
        ".hidden",
    ],
)
def test_a_key_outside_the_blob_area_is_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(InvalidRequest):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidRequest):
        store.delete_prefix(key)
