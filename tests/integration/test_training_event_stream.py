"""A training job's events as server-sent events, over real HTTP from a real server and its
worker: the stream delivers metrics while the job runs, each event once and in order, the job's
changes, and an `end` once it is finished; a client that reconnects with `Last-Event-ID` gets
only what it missed; the stream answers only a caller who may see the job."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The slowed textcnn: 3 epochs of about 40 steps, each 0.05 s longer; a loss every 10 steps
# (training/loop.py) and the validation metrics at each epoch's end.
HYPERPARAMETERS = {
    "n_epochs": 3,
    "batch_size": 4,
    "embedding_dim": 16,
    "n_filters": 8,
    "step_delay_s": 0.05,
}


@dataclass(frozen=True)
class Frame:
    received_s: float  # monotonic
    event: str  # "message" when unnamed, as EventSource names it
    id: int | None
    data: dict[str, Any]


def read_stream(response: httpx.Response) -> Iterator[Frame]:
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield Frame(
                    time.monotonic(),
                    fields.get("event", "message"),
                    int(fields["id"]) if "id" in fields else None,
                    json.loads(fields["data"]),
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("sse") / "home",
        {
            "OPENMAAS_WORKERS": "1",
            "OPENMAAS_TRAINING_THREADS": "1",  # a second thread only spins on a busy machine
            "OPENMAAS_EXTRA_RECIPES": "tests.integration.test_training_jobs:SlowTextCNN",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def job_id(server: RunningServer) -> str:
    lines = [
        json.dumps({"text": f"{word} film number {i} was {word}", "label": label})
        for i in range(100)
        for word, label in (("great", "positive"), ("awful", "negative"))
    ]
    upload = httpx.post(
        f"{server.url}/v1/datasets",
        files={"file": ("reviews.jsonl", ("\n".join(lines) + "\n").encode())},
        headers=server.headers,
        timeout=60,
    )
    assert upload.status_code == 201, upload.text
    created = httpx.post(
        f"{server.url}/v1/training/jobs",
        json={
            "recipe": "slow_textcnn",
            "training_file": upload.json()["id"],
            "hyperparameters": HYPERPARAMETERS,
        },
        headers=server.headers,
        timeout=60,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def stream_url(server: RunningServer, job_id: str) -> str:
    return f"{server.url}/v1/training/jobs/{job_id}/events/stream"


def follow(server: RunningServer, job_id: str) -> tuple[list[Frame], int]:
    """Every frame until `end`, reconnecting as EventSource does when the server closes a
    stream (after STREAM_MAX_S) with the last event id seen; and how many streams it took."""
    frames: list[Frame] = []
    streams = 0
    # The worker's first job waits for torch to import: minutes on a busy machine.
    deadline = time.monotonic() + 300
    while not frames or frames[-1].event != "end":
        assert time.monotonic() < deadline, "the job did not finish"
        seen = [f.id for f in frames if f.id is not None]
        headers = {**server.headers, **({"Last-Event-ID": str(seen[-1])} if seen else {})}
        with httpx.stream("GET", stream_url(server, job_id), headers=headers, timeout=60) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            frames.extend(read_stream(r))
        streams += 1
    return frames, streams


def test_the_stream_follows_a_running_job_to_its_end(server: RunningServer, job_id: str) -> None:
    frames, streams = follow(server, job_id)
    print(f"{len(frames)} frames over {streams} streams")
    assert frames[-1].event == "end"
    assert frames[-1].data["status"] == "succeeded"
    events = [f for f in frames if f.event == "message"]
    ids = [f.id for f in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(f.id == f.data["id"] for f in events)
    listed = httpx.get(
        f"{server.url}/v1/training/jobs/{job_id}/events",
        params={"limit": 1000},
        headers=server.headers,
    ).json()["data"]
    assert ids == [event["id"] for event in listed]  # every event, once
    # Live: losses arrived over several seconds while the job ran, before it finished.
    losses = [f for f in events if f.data["type"] == "metrics" and "loss" in (f.data["data"] or {})]
    assert len(losses) >= 8
    finished_at = next(
        f.received_s for f in frames if f.event == "job" and f.data["status"] == "succeeded"
    )
    running = [f for f in losses if f.received_s < finished_at]
    assert running[-1].received_s - running[0].received_s > 1.0
    statuses = [f.data["status"] for f in frames if f.event == "job"]
    assert "running" in statuses
    assert statuses[-1] == "succeeded"


def test_a_reconnecting_client_gets_only_what_it_missed(server: RunningServer, job_id: str) -> None:
    listed = httpx.get(
        f"{server.url}/v1/training/jobs/{job_id}/events",
        params={"limit": 1000},
        headers=server.headers,
    ).json()["data"]
    middle = listed[len(listed) // 2]["id"]
    for extra in ({"headers": {"Last-Event-ID": str(middle)}}, {"params": {"after": middle}}):
        headers = {**server.headers, **extra.get("headers", {})}
        with httpx.stream(
            "GET",
            stream_url(server, job_id),
            headers=headers,
            params=extra.get("params"),
            timeout=30,
        ) as r:
            frames = list(read_stream(r))
        ids = [f.id for f in frames if f.event == "message"]
        assert ids == [event["id"] for event in listed if event["id"] > middle]
        assert [f.event for f in frames[-2:]] == ["job", "end"]


def test_the_stream_answers_only_who_may_see_the_job(server: RunningServer, job_id: str) -> None:
    url = stream_url(server, job_id)
    assert httpx.get(url).status_code == 401
    missing = httpx.get(stream_url(server, "ftjob-absent"), headers=server.headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/json")
    bad = httpx.get(url, headers={**server.headers, "Last-Event-ID": "not-a-number"})
    assert bad.status_code == 400
    assert "Last-Event-ID" in bad.json()["error"]["message"]
    httpx.post(
        f"{server.url}/v1/projects", json={"name": "elsewhere"}, headers=server.headers
    ).raise_for_status()
    key = httpx.post(
        f"{server.url}/v1/keys",
        json={"name": "other", "scopes": ["training"], "project": "elsewhere"},
        headers=server.headers,
    )
    assert key.status_code == 201, key.text
    other = {"Authorization": f"Bearer {key.json()['key']}"}
    assert httpx.get(url, headers=other).status_code == 404  # another project's job
