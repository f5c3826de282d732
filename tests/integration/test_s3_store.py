"""The artifact store on a real S3 API server (moto's standalone server): the local store's
blob conformance tests run against it as they are, a version survives a cold cache, a file
over 64 MiB goes up as a multipart upload, and the bucket holds ciphertext when the store
encrypts."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.cli.admin import rekey_store
from openmaas.crypto import EncryptionKey, Keyring, read_header
from openmaas.errors import ObjectStoreError
from openmaas.registry.artifacts import ArtifactStore, verify_files
from openmaas.registry.composition import Registry
from openmaas.registry.intake import ArchiveLimits
from openmaas.registry.object_store import S3ArtifactStore, s3_filesystem
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.store.database import Database
from tests.factories import write_hf_model
from tests.integration.s3_server import S3Server, bucket_fixture

# The local store's blob suite, collected here again over the `store` fixture below.
from tests.unit.test_artifact_blobs import (  # noqa: F401
    test_a_blob_is_replaced_whole_and_leaves_no_partial_file,
    test_a_failed_write_leaves_the_old_blob_and_no_partial_file,
    test_a_key_outside_the_blob_area_is_refused,
    test_blobs_are_encrypted_at_rest_when_the_store_encrypts,
    test_blobs_round_trip_by_key_and_list_by_prefix,
)

BUCKET = "conformance"
MiB = 1024 * 1024


s3 = bucket_fixture(BUCKET)


@pytest.fixture(scope="module")
def filesystem(s3: S3Server) -> Any:
    return s3_filesystem(s3.options)  # one client for the module: each takes ~0.5 s to make


def s3_store(
    filesystem: Any, cache: Path, keys: Keyring | None = None, prefix: str = ""
) -> S3ArtifactStore:
    url = f"s3://{BUCKET}/{prefix or uuid.uuid4().hex}"
    store = S3ArtifactStore(url, cache, keys, filesystem=filesystem)
    store.start()
    return store


@pytest.fixture(params=["plaintext", "encrypted"])
def store(request: pytest.FixtureRequest, filesystem: Any, tmp_path: Path) -> ArtifactStore:
    keys = Keyring(EncryptionKey.generate()) if request.param == "encrypted" else Keyring()
    return s3_store(filesystem, tmp_path / "cache", keys)


def test_blobs_live_in_the_bucket_and_a_cold_cache_reads_them(
    s3: S3Server, filesystem: Any, tmp_path: Path
) -> None:
    key = Keyring(EncryptionKey.generate())
    first = s3_store(filesystem, tmp_path / "one", key, prefix="shared-blobs")
    first.put_bytes("jobs/j/ckpt/state.json", b'{"step": 7}')
    stored = s3.objects(BUCKET, "shared-blobs/")
    assert list(stored) == ["shared-blobs/jobs/j/ckpt/state.json"]
    body = s3.client().get_object(Bucket=BUCKET, Key="shared-blobs/jobs/j/ckpt/state.json")
    assert b'"step"' not in body["Body"].read()  # ciphertext in the bucket

    other = s3_store(filesystem, tmp_path / "two", key, prefix="shared-blobs")  # another machine
    assert other.list_keys("jobs/j") == ["jobs/j/ckpt/state.json"]
    assert other.get_bytes("jobs/j/ckpt/state.json") == b'{"step": 7}'
    first.put_bytes("jobs/j/ckpt/state.json", b'{"step": 8}')
    assert other.get_bytes("jobs/j/ckpt/state.json") == b'{"step": 8}'  # never stale


def test_a_file_over_64_mib_goes_up_in_parts_and_verifies_from_a_cold_cache(
    s3: S3Server, filesystem: Any, tmp_path: Path
) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "weights.safetensors").write_bytes(os.urandom(64 * MiB + 123))
    (source / "config.json").write_text("{}")
    store = s3_store(filesystem, tmp_path / "cache", prefix="big")
    staged = store.stage_files(
        {
            "weights.safetensors": source / "weights.safetensors",
            "config.json": source / "config.json",
        }
    )
    location = store.publish(staged)

    stored = s3.objects(BUCKET, f"big/objects/{location}/")
    weights = stored[f"big/objects/{location}/weights.safetensors"]
    assert weights["Size"] == 64 * MiB + 123
    # A multipart object's ETag is "<md5 of the parts' md5s>-<number of parts>".
    parts = int(weights["ETag"].strip('"').rsplit("-", 1)[1])
    assert parts == 5  # 16 MiB parts
    assert not store.staging_dir.exists() or not list(store.staging_dir.iterdir())

    cold = s3_store(filesystem, tmp_path / "cold", prefix="big")
    directory = cold.path_of(location)
    assert verify_files(directory, staged.files, keys=cold.keys) == []


def test_a_missing_bucket_is_named_with_the_fix(s3: S3Server, tmp_path: Path) -> None:
    store = S3ArtifactStore("s3://no-such-bucket/x", tmp_path / "cache", storage_options=s3.options)
    with pytest.raises(ObjectStoreError, match="no-such-bucket"):
        store.start()


def test_key_rotation_rewrites_every_object_in_the_bucket(
    s3: S3Server, filesystem: Any, tmp_path: Path
) -> None:
    """`openmaas admin rotate-key` on a machine whose cache is empty: versions, datasets and
    job blobs in the bucket all end up under the new key, and read back through it."""
    db = Database(f"sqlite:///{tmp_path / 'openmaas.db'}")
    db.migrate()
    prefix = "rotation"

    def registry(cache: str, keys: Keyring) -> Registry:
        store = s3_store(filesystem, tmp_path / cache, keys, prefix=prefix)
        opened = Registry.create(db, store, allow_pickle=False, limits=ArchiveLimits(1 << 26, 100))
        opened.start()
        return opened

    try:
        plain = registry("writer", Keyring())
        plan = plan_directory(write_hf_model(tmp_path / "model"))
        plain.registration.register_plan("a", plan, VersionSpec(), caller=SYSTEM)
        dataset = plain.artifacts.root / "datasets" / "file-1" / "content"
        plain.artifacts.write_stream(io.BytesIO(b'{"text": "hi"}\n'), dataset)
        plain.artifacts.put_bytes("jobs/ftjob-1/ckpt/state.json", b'{"step": 1}')

        key = EncryptionKey.generate()
        report = rekey_store(registry("rotator", Keyring(key)), Keyring(key))
        assert (report.rekeyed, report.unchanged, report.problems) == (len(plan.files) + 2, 0, [])
        client = s3.client()
        for name in s3.objects(BUCKET, f"{prefix}/"):
            body = io.BytesIO(client.get_object(Bucket=BUCKET, Key=name)["Body"].read())
            header = read_header(body, name)
            assert header is not None, name
            assert header.key_id == key.key_id, name

        reader = registry("reader", Keyring(key))
        assert reader.files.verify("a", 1, caller=SYSTEM).ok
        assert reader.artifacts.get_bytes("jobs/ftjob-1/ckpt/state.json") == b'{"step": 1}'
        with reader.artifacts.open_plaintext(
            reader.artifacts.root / "datasets/file-1/content"
        ) as f:
            assert f.read() == b'{"text": "hi"}\n'
    finally:
        db.close()
