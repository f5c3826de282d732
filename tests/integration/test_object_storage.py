"""A server whose artifacts live in object storage (OPENMAAS_ARTIFACTS_URL=s3://...) on a real
S3 API server (moto's), encrypted at rest, with one job worker: a model registered, served,
trained and optimized, every file of it in the bucket and none on local disk but the cache,
verified against its manifest, and an object changed in the bucket refused by name."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from openmaas import Client
from openmaas.crypto import EncryptionKey, encrypted_size
from openmaas.protocol.registry import VersionOut
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import start_job_server
from tests.integration.s3_server import S3Server, bucket_fixture
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import build_bert

BUCKET = "openmaas-artifacts"
PREFIX = "prod"
# What a server's home may hold with its artifacts in a bucket: the cache, its database,
# its secrets (pepper, the worker's key file), the workers' scratch.
LOCAL_STATE = ("artifact-cache/", "openmaas.db", "secrets/")


s3 = bucket_fixture(BUCKET)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[RunningServer]:
    running = start_job_server(
        tmp_path_factory,
        "object-storage",
        {
            **s3.env,
            "OPENMAAS_ARTIFACTS_URL": f"s3://{BUCKET}/{PREFIX}",
            "OPENMAAS_ENCRYPTION_KEY": EncryptionKey.generate().to_text(),
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def oai(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def encoder(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> VersionOut:
    path = build_bert(tmp_path_factory.mktemp("encoder") / "bert")
    return sdk.upload("tiny-encoder", path, task="embedding", params={"normalize": "l2"})


def sentiment_jsonl(rows: int = 64) -> bytes:
    rng = random.Random(5)
    words = {
        "positive": ["good", "great", "lovely", "fun", "bright"],
        "negative": ["bad", "awful", "dull", "grim", "boring"],
    }
    lines = []
    for index in range(rows):
        label = ("positive", "negative")[index % 2]
        text = " ".join(rng.choice(words[label]) for _ in range(6))
        lines.append(json.dumps({"text": f"a {text} film", "label": label}))
    return ("\n".join(lines) + "\n").encode()


def stored_versions(s3: S3Server) -> dict[str, dict[str, int]]:
    """{location: {file: stored bytes}} of every version directory in the bucket."""
    found: dict[str, dict[str, int]] = {}
    for key, item in s3.objects(BUCKET, f"{PREFIX}/objects/").items():
        _, _, location, rel = key.split("/", 3)
        found.setdefault(location, {})[rel] = item["Size"]
    return found


def location_of(s3: S3Server, version: VersionOut) -> str:
    """The bucket directory holding exactly this version's files, as ciphertext."""
    expected = {f.path: encrypted_size(f.size) for f in version.files}
    matches = [loc for loc, files in stored_versions(s3).items() if files == expected]
    assert matches, f"{version.model}:{version.version} is not in the bucket"
    return matches[0]


def test_a_registered_model_is_stored_in_the_bucket_serves_and_verifies(
    s3: S3Server, sdk: Client, oai: openai.OpenAI, encoder: VersionOut
) -> None:
    location = location_of(s3, encoder)
    body = s3.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/objects/{location}/config.json")
    assert b"hidden_size" not in body["Body"].read()  # ciphertext in the bucket

    answer = oai.embeddings.create(model="tiny-encoder", input=["object storage"])
    assert len(answer.data[0].embedding) == 32
    report = sdk.verify("tiny-encoder", encoder.version)
    assert (report.ok, report.files_checked) == (True, len(encoder.files))


@pytest.fixture(scope="module")
def trained(s3: S3Server, sdk: Client, oai: openai.OpenAI) -> VersionOut:
    uploaded = oai.files.create(file=("sentiment.jsonl", sentiment_jsonl()), purpose="fine-tune")
    assert uploaded.status == "processed", uploaded.status_details
    assert f"{PREFIX}/datasets/{uploaded.id}/content" in s3.objects(BUCKET, f"{PREFIX}/datasets/")
    job = sdk.create_training_job(
        "textcnn",
        uploaded.id,
        hyperparameters={"embedding_dim": 16, "n_filters": 8, "n_epochs": 1, "batch_size": 16},
        model_name="sentiment",
    )
    done = wait_for(
        f"training job {job.id}",
        lambda: found if (found := sdk.get_training_job(job.id)).finished else None,
        180,
    )
    assert done.status == "succeeded", done.error
    return sdk.resolve("sentiment")


def classify(server: RunningServer, model: str) -> str:
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": model, "input": ["a lovely fun film"]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    label: str = answer.json()["data"][0]["label"]
    return label


def test_a_training_job_reads_its_dataset_from_the_bucket_and_publishes_there(
    server: RunningServer, s3: S3Server, sdk: Client, trained: VersionOut
) -> None:
    location_of(s3, trained)
    assert classify(server, "sentiment") in ("positive", "negative")
    assert sdk.verify("sentiment", trained.version).ok


def test_an_optimization_job_publishes_its_version_to_the_bucket(
    server: RunningServer, s3: S3Server, sdk: Client, trained: VersionOut
) -> None:
    job = sdk.create_optimization_job("sentiment", "onnx")
    done = wait_for(
        f"optimization job {job.id}",
        lambda: found if (found := sdk.get_optimization_job(job.id)).finished else None,
        180,
    )
    assert done.status == "succeeded", done.error
    version = sdk.resolve("sentiment-onnx")
    assert version.lineage.transform == "onnx"
    location_of(s3, version)
    assert classify(server, "sentiment-onnx") == classify(server, "sentiment")
    assert sdk.verify("sentiment-onnx", version.version).ok


def test_nothing_but_the_cache_is_on_local_disk(
    server: RunningServer, s3: S3Server, sdk: Client
) -> None:
    versions = [version for model in sdk.list_models() for version in sdk.list_versions(model.name)]
    assert len(versions) >= 3
    for version in versions:
        location_of(s3, version)
    assert not (server.home / "artifacts").exists()
    leftovers = sorted(
        str(path.relative_to(server.home))
        for path in server.home.rglob("*")
        if path.is_file() and not path.relative_to(server.home).as_posix().startswith(LOCAL_STATE)
    )
    assert leftovers == []


def test_an_object_changed_in_the_bucket_is_refused_by_name(
    server: RunningServer, s3: S3Server, sdk: Client, tmp_path: Path
) -> None:
    before = set(stored_versions(s3))
    version = sdk.upload("victim", build_bert(tmp_path / "victim", seed=9), task="embedding")
    (location,) = set(stored_versions(s3)) - before  # same sizes as tiny-encoder's files
    key = f"{PREFIX}/objects/{location}/model.safetensors"
    client = s3.client()
    stored = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    stored[len(stored) // 2] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(stored))

    report = sdk.verify("victim", version.version)
    assert not report.ok
    assert [(p.path, p.problem) for p in report.problems] == [
        ("model.safetensors", "decryption_failed")
    ]
    answer = httpx.post(
        f"{server.url}/v1/embeddings",
        headers=server.headers,
        json={"model": "victim", "input": "x"},
        timeout=60,
    )
    # The load fails (and is tried again on the next request), naming the file.
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "'model.safetensors' failed verification (decryption_failed)" in error["message"]
