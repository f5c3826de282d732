"""Serving on Ray Serve, against a real two-node Ray cluster on this machine and a real server
started with OPENMAAS_RAY_ADDRESS: the catalog's MiniLM served by 2 replicas (both answer,
as /v1/models shows); one of them killed with SIGKILL under load costs no failed request and
is replaced; word vectors the test makes scale to zero when idle and back on a request,
which waits for the cold start and succeeds. The embedded server never imports Ray."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import OpenAI

from openmaas import Client
from openmaas.protocol.registry import PathSource
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.otlp_receiver import OtlpReceiver
from tests.ray_cluster import RayCluster, ray_cluster
from tests.runtimes.tiny_models import build_gpt2

# A cluster, a server that joins it and replicas that import torch: minutes on a busy machine.
pytestmark = pytest.mark.timeout(900)

MINILM = "all-minilm-l6-v2"
ZERO = "zero-vectors"  # scales to zero when idle (docs/scaling.md)
WORDS = ("good", "bad", "film", "plot")


def documented_deployments() -> dict[str, dict[str, Any]]:
    """The OPENMAAS_RAY_DEPLOYMENTS of docs/scaling.md: quarter CPUs, so that 2 MiniLM
    replicas, a replacement and the scale-to-zero replica fit on the cluster's 2 CPUs."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    found = re.search(r"OPENMAAS_RAY_DEPLOYMENTS='([^']+)'", text)
    assert found, "docs/scaling.md shows no OPENMAAS_RAY_DEPLOYMENTS"
    deployments: dict[str, dict[str, Any]] = json.loads(found.group(1))
    return deployments


DEPLOYMENTS = documented_deployments()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster(head_cpus=1, worker_cpus=1) as running:
        yield running


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def ray_server(
    cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("ray") / "home",
        {
            "OPENMAAS_OTEL_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OPENMAAS_RAY_ADDRESS": cluster.address,
            "OPENMAAS_RAY_DEPLOYMENTS": json.dumps(DEPLOYMENTS),
            "OPENMAAS_THREADS": "1",
        },
        startup_timeout_s=300,
    )
    try:
        with Client(running.url, api_key=running.key) as sdk:
            sdk.register_catalog_entry(MINILM)
        vectors = "".join(
            f"{word} {' '.join(str(float(i + j + 1)) for j in range(4))}\n"
            for i, word in enumerate(WORDS)
        )
        imported = httpx.post(
            f"{running.url}/v1/registry/models/{ZERO}/versions/word_vectors",
            files={"file": ("vectors.txt", vectors.encode(), "text/plain")},
            headers=running.headers,
            timeout=60,
        )
        assert imported.status_code == 201, imported.text
        yield running
    finally:
        stop_server(running)


def embed(server: RunningServer, model: str, texts: list[str]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": model, "input": texts},
        headers=server.headers,
        timeout=180,
    )


def card(server: RunningServer, model: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/models/{model}", headers=server.headers, timeout=30)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_for(server: RunningServer, model: str, running: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        replicas = card(server, model)["replicas"]
        if replicas["running"] == running:
            return replicas  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{model}: not {running} running: {replicas}"
        time.sleep(0.5)


def test_two_replicas_answer(ray_server: RunningServer) -> None:
    first = embed(ray_server, MINILM, ["a first sentence"])
    assert first.status_code == 200, first.text
    assert len(first.json()["data"][0]["embedding"]) == 384
    # Concurrent requests: the handle spreads them over both replicas.
    with httpx.Client(headers=ray_server.headers, timeout=120) as http:
        results: list[int] = []

        def send(i: int) -> None:
            response = http.post(
                f"{ray_server.url}/v1/embeddings",
                json={"model": MINILM, "input": [f"sentence number {i} of the batch"]},
            )
            results.append(response.status_code)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200] * 32
    replicas = card(ray_server, MINILM)["replicas"]
    assert (replicas["running"], replicas["min_replicas"], replicas["max_replicas"]) == (2, 2, 2)
    answered = [r for r in replicas["replicas"] if r["requests"] > 0]
    assert len(answered) == 2, replicas
    assert sum(r["requests"] for r in answered) == 33
    assert card(ray_server, MINILM)["loaded"] is True


def test_a_replica_continues_the_callers_trace(
    ray_server: RunningServer, receiver: OtlpReceiver
) -> None:
    """W3C trace context crosses into the replica: its span (and the batch it ran) are in
    the client's trace, under the API process's request span, sent by the replica process."""
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    response = httpx.post(
        f"{ray_server.url}/v1/embeddings",
        json={"model": MINILM, "input": ["a traced sentence"]},
        headers={**ray_server.headers, "traceparent": f"00-{trace_id}-{client_span}-01"},
        timeout=180,
    )
    assert response.status_code == 200, response.text
    spans = receiver.wait_for(
        lambda found: (
            {"openmaas.replica.infer", "openmaas.batch_run"}
            <= {span.name for span in found if span.service == "openmaas-replica"}
        ),
        trace_id,
        timeout_s=60,
    )
    by_id = {span.span_id: span for span in spans}
    (replica,) = [span for span in spans if span.name == "openmaas.replica.infer"]
    assert str(replica.attributes["openmaas.model"]).endswith(f"{MINILM}:1")
    # Its parent is a span of the API process, itself under the client's span.
    parent = by_id[replica.parent_span_id]
    assert parent.service != "openmaas-replica"
    chain = [parent]
    while chain[-1].parent_span_id in by_id:
        chain.append(by_id[chain[-1].parent_span_id])
    assert chain[-1].parent_span_id == client_span


def test_a_chat_streams_through_its_replica(ray_server: RunningServer, tmp_path: Path) -> None:
    """Generation runs in the version's replica and streams back through the API process:
    the openai client's stream is the same text as the whole answer, token by token."""
    with Client(ray_server.url, api_key=ray_server.key) as sdk:
        sdk.register("ray-gpt2", PathSource(path=str(build_gpt2(tmp_path / "gpt2"))))
    messages = [{"role": "user", "content": "Say something."}]
    with OpenAI(base_url=f"{ray_server.url}/v1", api_key=ray_server.key) as client:
        whole = client.chat.completions.create(
            model="ray-gpt2",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
        )
        chunks = list(
            client.chat.completions.create(
                model="ray-gpt2",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=8,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert whole.usage is not None
    assert 1 <= whole.usage.completion_tokens <= 8
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert len([d for d in deltas if d]) >= 2  # more than one chunk: it streamed
    assert "".join(d or "" for d in deltas) == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    replicas = card(ray_server, "ray-gpt2")["replicas"]
    assert replicas["running"] == 1
    assert sum(r["requests"] for r in replicas["replicas"]) == 2


def test_killed_replica_costs_no_request_and_is_replaced(ray_server: RunningServer) -> None:
    before = wait_for(ray_server, MINILM, 2, timeout_s=180)
    victim = before["replicas"][0]
    statuses: list[int] = []
    stop = threading.Event()

    def load(client: int) -> None:
        with httpx.Client(headers=ray_server.headers, timeout=120) as http:
            i = 0
            while not stop.is_set():
                response = http.post(
                    f"{ray_server.url}/v1/embeddings",
                    json={"model": MINILM, "input": [f"client {client} sends sentence {i}"]},
                )
                statuses.append(response.status_code)
                i += 1

    clients = [threading.Thread(target=load, args=(c,)) for c in range(8)]
    for thread in clients:
        thread.start()
    time.sleep(1.0)
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = len(statuses)
    time.sleep(3.0)
    stop.set()
    for thread in clients:
        thread.join()
    assert len(statuses) > killed_at + 8, "the load did not go on past the kill"
    assert set(statuses) == {200}, [s for s in statuses if s != 200]
    after = wait_for(ray_server, MINILM, 2, timeout_s=180)
    ids = {r["id"] for r in after["replicas"] if r["state"] == "RUNNING"}
    assert victim["id"] not in ids
    assert embed(ray_server, MINILM, ["after the replacement"]).status_code == 200


def test_scale_to_zero_and_back(ray_server: RunningServer) -> None:
    # At zero from the start (min_replicas 0): the first request waits for the cold start.
    cold = embed(ray_server, ZERO, ["good film"])
    assert cold.status_code == 200, cold.text
    good, film = (np.arange(1, 5, dtype=np.float32) + i for i in (0, 2))
    mean = (good + film) / 2
    np.testing.assert_allclose(cold.json()["data"][0]["embedding"], mean / np.linalg.norm(mean))
    assert card(ray_server, ZERO)["replicas"]["running"] == 1
    assert wait_for(ray_server, ZERO, 0, timeout_s=180)["running"] == 0
    assert card(ray_server, ZERO)["loaded"] is False
    again = embed(ray_server, ZERO, ["bad plot"])
    assert again.status_code == 200, again.text
    assert card(ray_server, ZERO)["replicas"]["running"] == 1


def test_embedded_server_never_imports_ray(tmp_path: Path) -> None:
    code = (
        "import sys; from openmaas.settings import Settings; "
        "from openmaas.api.app import build_app; "
        f"build_app(Settings(home={str(tmp_path)!r})); print('ray' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
