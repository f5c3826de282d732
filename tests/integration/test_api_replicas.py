"""Several API replicas: two `openmaas serve` processes, each with a home of its own, that share
one PostgreSQL database, the Redis at 127.0.0.1:6379, one object store (a moto S3 server), the
key pepper and the encryption key, as behind a load balancer without sticky sessions
(docs/scaling.md, "Several API replicas").

What one replica does, the other sees: keys, encrypted models, alias moves (within
OPENMAAS_RESOLVE_TTL_S), rate-limit counters, usage, files and jobs. And a replica started with
another pepper refuses to start (it would refuse every key the others made)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from openmaas import Client
from openmaas.crypto import MAGIC, EncryptionKey
from tests.conftest import _reset_postgres
from tests.integration.conftest import RunningServer, running_servers, start_server, stop_server
from tests.integration.s3_server import S3Server, bucket_fixture
from tests.runtimes.tiny_models import build_bert

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/0"
BUCKET = "replicas"
RESOLVE_TTL_S = 2.0  # the default, set so the test does not move with it
TEXT = "The quick brown fox jumps over the lazy dog."
MODEL = "tiny"
VERSION_HEADER = "OpenMaaS-Model-Version"


s3 = bucket_fixture(BUCKET)


@pytest.fixture(scope="module")
def shared_env(pg_database_url: str, s3: S3Server) -> dict[str, str]:
    """What every replica is given alike; each still has its own OPENMAAS_HOME."""
    _reset_postgres(pg_database_url)
    return {
        "OPENMAAS_DATABASE_URL": pg_database_url,
        "OPENMAAS_REDIS_URL": REDIS_URL,
        "OPENMAAS_ARTIFACTS_URL": f"s3://{BUCKET}/store",
        **s3.env,
        "OPENMAAS_KEY_PEPPER": secrets.token_urlsafe(32),
        "OPENMAAS_ENCRYPTION_KEY": EncryptionKey.generate().to_text(),
        "OPENMAAS_RESOLVE_TTL_S": str(RESOLVE_TTL_S),
    }


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, shared_env: dict[str, str]
) -> Iterator[tuple[RunningServer, RunningServer]]:
    root = tmp_path_factory.mktemp("replicas")
    with running_servers([root / "a", root / "b"], shared_env) as servers:
        first, second = servers
        yield first, second


@pytest.fixture(scope="module")
def tiny(
    tmp_path_factory: pytest.TempPathFactory, replicas: tuple[RunningServer, RunningServer]
) -> Path:
    """A tiny BERT, uploaded through the first replica as versions 1 and 2 (other weights),
    public."""
    first, _ = replicas
    root = tmp_path_factory.mktemp("tiny")
    with Client(first.url, api_key=first.key) as sdk:
        for seed in (1, 2):
            directory = build_bert(root / f"bert-{seed}", seed=seed)
            version = sdk.upload(MODEL, directory, task="embedding")
            assert version.version == seed
    # Public: the tests' own projects (fresh ones, for fresh Redis counters) serve it too.
    url = f"{first.url}/v1/registry/models/{MODEL}/public"
    made_public = httpx.put(url, json={"public": True}, headers=first.headers)
    assert made_public.status_code == 200, made_public.text
    return root


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def embed(server: RunningServer, key: str, model: str = MODEL) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": model, "input": TEXT},
        headers=bearer(key),
        timeout=60,
    )


def served_by(server: RunningServer, model: str) -> str:
    """`model:version` of the version that answered `model` on `server`."""
    response = embed(server, server.key, model)
    assert response.status_code == 200, response.text
    return response.headers[VERSION_HEADER]


def project_key(server: RunningServer, limits: dict[str, int]) -> tuple[int, str]:
    """A fresh project (a unique name: Redis counters outlive a test run) and an inference key."""
    name = f"replicas-{uuid.uuid4().hex[:10]}"
    with Client(server.url, api_key=server.key) as admin:
        admin.create_project(name, limits=limits)
        made = admin.create_key("app", ["inference"], project=name)
    return made.id, made.key


@contextmanager
def stray_replica(
    tmp_path: Path, shared_env: dict[str, str], changes: dict[str, str | None]
) -> Iterator[RunningServer]:
    """A third replica whose settings differ from the pair's by `changes`."""
    running = start_server(tmp_path / "stray", {**shared_env, **changes})
    try:
        yield running
    finally:
        stop_server(running)


# -- the pepper -------------------------------------------------------------------------------


def test_a_key_made_on_one_replica_works_on_the_other_and_another_pepper_cannot_start(
    tmp_path: Path,
    shared_env: dict[str, str],
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    first, second = replicas
    _, made_on_first = project_key(first, {})
    _, made_on_second = project_key(second, {})
    for server in replicas:
        for key in (made_on_first, made_on_second):
            assert httpx.get(f"{server.url}/v1/models", headers=bearer(key)).status_code == 200

    # The same database and everything else, another pepper: every stored hash would be
    # foreign, and each client's 401 would count toward blocking its address on every
    # replica. The database holds the first server's pepper fingerprint: this one stops.
    other_pepper = {"OPENMAAS_KEY_PEPPER": secrets.token_urlsafe(32), "OPENMAAS_REDIS_URL": None}
    with (
        pytest.raises(RuntimeError, match="server exited") as refused,
        stray_replica(tmp_path, shared_env, other_pepper),
    ):
        pass
    log = Path(str(refused.value).rsplit("see ", 1)[1]).read_text(errors="replace")
    assert "is not the one the API keys in its database were made with" in log
    assert "OPENMAAS_KEY_PEPPER" in log
    # Both replicas still take both keys.
    for server in replicas:
        assert (
            httpx.get(f"{server.url}/v1/models", headers=bearer(made_on_first)).status_code == 200
        )


# -- the encryption key and the object store -----------------------------------------------------


def test_a_model_uploaded_through_one_replica_is_encrypted_and_serves_on_both(
    s3: S3Server, tiny: Path, replicas: tuple[RunningServer, RunningServer]
) -> None:
    stored = s3.objects(BUCKET, "store/")
    weights = [name for name in stored if name.endswith("model.safetensors")]
    assert len(weights) == 2  # one per version
    for name in weights:
        head = s3.client().get_object(Bucket=BUCKET, Key=name, Range="bytes=0-7")["Body"].read()
        assert head == MAGIC  # encrypted at rest
    vectors = []
    for server in replicas:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as c:
            vectors.append(c.embeddings.create(model=f"{MODEL}:1", input=TEXT).data[0].embedding)
    assert len(vectors[0]) == 32
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


def test_a_replica_on_another_artifacts_store_cannot_load_the_models(
    tmp_path: Path, shared_env: dict[str, str], tiny: Path
) -> None:
    """The database names files that its own store (its home's directory) does not hold."""
    with stray_replica(tmp_path, shared_env, {"OPENMAAS_ARTIFACTS_URL": None}) as stray:
        refused = embed(stray, stray.key, f"{MODEL}:1")
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "model_load_failed"
    assert error["message"] == (
        f"model '{MODEL}:1' could not be loaded: {MODEL}:1: none of its 6 files is in this "
        "server's artifact store; every server on one database must use the same store (one "
        "OPENMAAS_ARTIFACTS_URL, or one OPENMAAS_ARTIFACTS_DIR they all reach)"
    )


# -- the resolution cache -------------------------------------------------------------------------


def test_an_alias_moved_on_one_replica_is_seen_by_the_other_within_the_ttl(
    tiny: Path, replicas: tuple[RunningServer, RunningServer]
) -> None:
    first, second = replicas
    reference = f"{MODEL}@production"
    with Client(first.url, api_key=first.key) as sdk:
        sdk.set_alias(MODEL, "production", 1)
        stale_seen = False
        for attempt, target in enumerate((2, 1, 2)):  # a slow moment hides the stale answer
            if attempt:
                time.sleep(RESOLVE_TTL_S)  # the second replica's entry expires: cached anew
            before = target ^ 3  # the other version
            cached_at = time.monotonic()  # at or before the second replica caches `before`
            assert served_by(second, reference) == f"{MODEL}:{before}"
            sdk.set_alias(MODEL, "production", target, reason="replica test")
            moved_at = time.monotonic()
            # The replica that moved it knows at once.
            assert served_by(first, reference) == f"{MODEL}:{target}"
            # The other answers from its cache until the entry is RESOLVE_TTL_S old ...
            answer = served_by(second, reference)
            if time.monotonic() - cached_at < RESOLVE_TTL_S:
                assert answer == f"{MODEL}:{before}"
                stale_seen = True
            # ... and never later than RESOLVE_TTL_S after the move.
            time.sleep(max(0.0, moved_at + RESOLVE_TTL_S - time.monotonic()))
            assert served_by(second, reference) == f"{MODEL}:{target}"
            if stale_seen:
                break
        assert stale_seen, "every try was slower than the TTL: the machine is too busy"


# -- no stickiness ------------------------------------------------------------------------------


def test_a_rate_limit_counts_requests_on_both_replicas_together(
    tiny: Path, replicas: tuple[RunningServer, RunningServer]
) -> None:
    first, second = replicas
    for _ in range(2):  # per-minute counters start over each minute: one run in one minute
        minute = int(time.time() // 60)
        _, key = project_key(first, {"requests_per_minute": 4})
        answers = [embed(server, key) for server in (first, second) * 3]
        if int(time.time() // 60) == minute:
            break
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429, 429]
    assert answers[-1].json()["error"]["code"] == "rate_limit_exceeded"
    assert answers[-1].headers["x-ratelimit-limit-requests"] == "4"


def test_usage_recorded_on_both_replicas_is_reported_by_either(
    tiny: Path, replicas: tuple[RunningServer, RunningServer]
) -> None:
    first, second = replicas
    key_id, key = project_key(first, {})
    answers = [embed(server, key) for server in (first, second, first, second)]
    assert [a.status_code for a in answers] == [200] * 4
    tokens = sum(a.json()["usage"]["prompt_tokens"] for a in answers)

    def reported(server: RunningServer) -> tuple[int, int]:
        with Client(server.url, api_key=server.key) as admin:
            total = admin.usage(key_id=key_id, group_by=[]).total
        return total.requests, total.input_tokens

    deadline = time.monotonic() + 30  # each replica writes its records every second
    while reported(first) != (4, tokens) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reported(first) == reported(second) == (4, tokens)


def test_a_file_and_a_job_made_on_one_replica_are_read_and_cancelled_on_the_other(
    tiny: Path, replicas: tuple[RunningServer, RunningServer]
) -> None:
    first, second = replicas
    line = b'{"custom_id": "1", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'
    with (
        openai.OpenAI(base_url=f"{first.url}/v1", api_key=first.key, max_retries=0) as on_first,
        openai.OpenAI(base_url=f"{second.url}/v1", api_key=second.key, max_retries=0) as on_second,
    ):
        made = on_first.files.create(file=("requests.jsonl", line), purpose="batch")
        assert on_second.files.retrieve(made.id).bytes == len(line)
        assert on_second.files.content(made.id).content == line

    # No worker runs here: the job stays queued until the other replica cancels it.
    with Client(first.url, api_key=first.key) as sdk_first:
        job = sdk_first.create_optimization_job(f"{MODEL}:1", "onnx")
        with Client(second.url, api_key=second.key) as sdk_second:
            assert sdk_second.get_optimization_job(job.id).status == "queued"
            assert sdk_second.cancel_optimization_job(job.id).status == "cancelled"
        assert sdk_first.get_optimization_job(job.id).status == "cancelled"
