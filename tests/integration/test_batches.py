"""OpenAI's Batch API against a real server with the stock `openai` client: files of requests
for embeddings, classification and chat run to output and error files in OpenAI's line shape,
through the same serving path as online requests (the same answers, metered to the key that
created the batch); bad input files fail the batch naming their lines; cancel; another
project's batch and files answer 404; a server stopped mid-batch resumes it without running
an answered line again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from openai import OpenAI
from openai.types import Batch

from openmaas import Client
from openmaas.protocol.registry import PathSource
from tests.integration import authed
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.runtimes.tiny_models import build_gpt2

pytestmark = pytest.mark.integration

FINISHED = ("completed", "failed", "expired", "cancelled")
OPENMAAS = Path(sys.executable).parent / "openmaas"
WAIT_S = 180.0  # a batch of a few requests takes seconds; a loaded 2-core machine more


def openai_client(server: RunningServer, key: str | None = None) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=key or server.key, max_retries=0)


def requests_file(endpoint: str, bodies: dict[str, dict[str, Any]]) -> bytes:
    lines = [
        {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
        for custom_id, body in bodies.items()
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def run_batch(client: OpenAI, endpoint: str, bodies: dict[str, dict[str, Any]]) -> Batch:
    uploaded = client.files.create(
        file=("requests.jsonl", requests_file(endpoint, bodies)), purpose="batch"
    )
    assert (uploaded.purpose, uploaded.status) == ("batch", "processed")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]  # the task routes are ours
        completion_window="24h",
        metadata={"suite": "batches"},
    )


def wait_for(
    client: OpenAI, batch_id: str, done: Callable[[Batch], bool] = lambda b: b.status in FINISHED
) -> Batch:
    deadline = time.monotonic() + WAIT_S
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} stuck: {batch}"
        time.sleep(0.2)


def lines_of(client: OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """The output or error file's lines, by custom_id (each must appear once)."""
    if file_id is None:
        return {}
    lines = [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines), "a custom_id appears twice"
    return by_id


@pytest.fixture(scope="module")
def client(serving_server: RunningServer) -> Iterator[OpenAI]:
    with openai_client(serving_server) as c:
        yield c


@pytest.fixture(scope="module")
def chat_model(serving_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = build_gpt2(tmp_path_factory.mktemp("batch-gpt2") / "gpt2")
    with Client(serving_server.url, api_key=serving_server.key) as sdk:
        sdk.register("batch-gpt2", PathSource(path=str(path)))
    return "batch-gpt2"


def test_a_batch_of_embeddings_answers_as_online_requests_do(client: OpenAI) -> None:
    texts = {"cat": "The cat sits on the mat.", "fox": "A quick brown fox."}
    bodies: dict[str, dict[str, Any]] = {
        name: {"model": "all-minilm-l6-v2", "input": text} for name, text in texts.items()
    }
    bodies["nowhere"] = {"model": "no-such-model", "input": "x"}
    bodies["empty"] = {"model": "all-minilm-l6-v2", "input": ""}
    created = run_batch(client, "/v1/embeddings", bodies)
    assert created.status in ("validating", "in_progress", "finalizing", "completed")
    assert created.request_counts is not None
    assert created.request_counts.total == 4
    assert created.metadata == {"suite": "batches"}

    batch = wait_for(client, created.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    assert batch.in_progress_at is not None
    assert batch.finalizing_at is not None
    assert batch.completed_at is not None
    output = lines_of(client, batch.output_file_id)
    assert set(output) == {"cat", "fox"}
    for name, text in texts.items():
        line = output[name]
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["request_id"]
        vector = np.asarray(line["response"]["body"]["data"][0]["embedding"])
        online = client.embeddings.create(model="all-minilm-l6-v2", input=text)
        assert np.allclose(vector, online.data[0].embedding, atol=1e-6)
    errors = lines_of(client, batch.error_file_id)
    assert set(errors) == {"nowhere", "empty"}
    missing = errors["nowhere"]["response"]
    assert missing["status_code"] == 404
    assert missing["body"]["error"]["code"] == "model_not_found"
    assert errors["empty"]["response"]["status_code"] == 400
    # The output files are the project's files, of OpenAI's purpose.
    assert client.files.retrieve(batch.output_file_id or "").purpose == "batch_output"


def test_a_batch_of_classifications(client: OpenAI, serving_server: RunningServer) -> None:
    bodies = {
        "love": {"model": "vader", "input": "I love it"},
        "hate": {"model": "vader", "input": ["I hate it", "What a wonderful day"]},
    }
    batch = wait_for(client, run_batch(client, "/v1/classify", bodies).id)
    assert batch.status == "completed", batch
    output = lines_of(client, batch.output_file_id)
    assert [d["label"] for d in output["love"]["response"]["body"]["data"]] == ["positive"]
    assert [d["label"] for d in output["hate"]["response"]["body"]["data"]] == [
        "negative",
        "positive",
    ]
    assert batch.error_file_id is None
    # A completed batch has nothing left to cancel.
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    audit = authed.get(
        f"{serving_server.url}/v1/audit",
        params={"action": "batch.create", "target": f"batches/{batch.id}"},
    ).json()["data"]
    assert [event["after"]["total"] for event in audit] == [2]


def test_a_batch_of_chat_completions(client: OpenAI, chat_model: str) -> None:
    bodies = {
        f"chat-{i}": {
            "model": chat_model,
            "messages": [{"role": "user", "content": f"Say something about {i}."}],
            "max_tokens": 8,
            "seed": i,
        }
        for i in range(3)
    }
    bodies["too-long"] = {
        "model": chat_model,
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 10**6,
    }
    batch = wait_for(client, run_batch(client, "/v1/chat/completions", bodies).id)
    assert batch.status == "completed", batch
    output = lines_of(client, batch.output_file_id)
    assert set(output) == {"chat-0", "chat-1", "chat-2"}
    for line in output.values():
        body = line["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] <= 8
    (refused,) = lines_of(client, batch.error_file_id).values()
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "max_tokens"


def test_a_file_with_bad_lines_fails_the_batch_naming_each_line(client: OpenAI) -> None:
    good = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/classify",
        "body": {"model": "vader", "input": "x"},
    }
    content = b"\n".join(
        [
            json.dumps(good).encode(),
            b"{broken",
            json.dumps(good).encode(),  # the same custom_id again
            json.dumps({**good, "custom_id": "b", "url": "/v1/embeddings"}).encode(),
        ]
    )
    uploaded = client.files.create(file=("bad.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/classify",  # type: ignore[arg-type]
        completion_window="24h",
    )
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None
    assert [(e.line, e.code) for e in batch.errors.data or []] == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "mismatched_url"),
    ]
    assert client.batches.retrieve(batch.id).status == "failed"
    # What needs no file is refused at once, as a 400 naming the field.
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/audio/transcriptions",  # type: ignore[arg-type]
            completion_window="24h",
        )
    assert refused.value.body["param"] == "endpoint"  # type: ignore[index]


def test_cancel_stops_a_running_batch_and_keeps_what_it_answered(
    client: OpenAI, chat_model: str
) -> None:
    bodies = {
        f"c{i}": {
            "model": chat_model,
            "messages": [{"role": "user", "content": f"Tell a long story number {i}."}],
            "max_tokens": 48,
        }
        for i in range(300)
    }
    created = run_batch(client, "/v1/chat/completions", bodies)
    wait_for(client, created.id, lambda b: bool(b.request_counts and b.request_counts.completed))
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None
    batch = wait_for(client, created.id)
    assert batch.status == "cancelled", batch
    assert batch.cancelled_at is not None
    assert batch.request_counts is not None
    done = batch.request_counts.completed + batch.request_counts.failed
    assert 0 < done < 300
    assert len(lines_of(client, batch.output_file_id)) == batch.request_counts.completed
    # Cancelling again changes nothing.
    assert client.batches.cancel(created.id).status == "cancelled"


def test_batches_list_newest_first_with_cursor_pages(client: OpenAI) -> None:
    bodies = {"one": {"model": "vader", "input": "fine"}}
    ids = [run_batch(client, "/v1/classify", bodies).id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2]
    assert first.has_more
    rest = client.batches.list(limit=2, after=first.data[-1].id)
    assert rest.data[0].id == ids[0]
    every = [b.id for b in client.batches.list(limit=2)]  # auto-paginated
    assert every[:3] == ids[::-1]


def test_another_projects_batch_and_files_answer_404(
    serving_server: RunningServer, client: OpenAI
) -> None:
    with Client(serving_server.url, api_key=serving_server.key) as admin:
        keys = {}
        for name in ("batch-tenant-a", "batch-tenant-b"):
            admin.create_project(name)
            keys[name] = admin.create_key(f"{name}-key", ["inference"], project=name)
    key_a, key_b = keys["batch-tenant-a"], keys["batch-tenant-b"]
    tenant_a, tenant_b = (
        openai_client(serving_server, key_a.key),
        openai_client(serving_server, key_b.key),
    )
    bodies = {f"l{i}": {"model": "vader", "input": f"line {i} is great"} for i in range(3)}
    batch = wait_for(tenant_a, run_batch(tenant_a, "/v1/classify", bodies).id)
    assert batch.status == "completed", batch

    for call in (
        lambda: tenant_b.batches.retrieve(batch.id),
        lambda: tenant_b.batches.cancel(batch.id),
        lambda: tenant_b.files.retrieve(batch.output_file_id or ""),
        lambda: tenant_b.files.content(batch.output_file_id or ""),
        lambda: tenant_b.files.content(batch.input_file_id),
        lambda: tenant_b.batches.create(
            input_file_id=batch.input_file_id,
            endpoint="/v1/classify",  # type: ignore[arg-type]
            completion_window="24h",
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert batch.id not in [b.id for b in tenant_b.batches.list()]
    assert client.batches.retrieve(batch.id).id == batch.id  # an admin sees every project's

    # The requests ran as tenant A's key: metered to it, route by route.
    usage = authed.get(
        f"{serving_server.url}/v1/usage", params={"key_id": key_a.id, "group_by": "route"}
    ).json()
    by_route = {group["route"]: group for group in usage["data"]}
    deadline = time.monotonic() + 30
    while by_route.get("/v1/classify", {}).get("requests", 0) < 3:
        assert time.monotonic() < deadline, usage
        time.sleep(0.5)
        usage = authed.get(
            f"{serving_server.url}/v1/usage", params={"key_id": key_a.id, "group_by": "route"}
        ).json()
        by_route = {group["route"]: group for group in usage["data"]}
    assert by_route["/v1/classify"]["requests"] == 3
    assert by_route["/v1/classify"]["input_tokens"] > 0


def test_a_batch_resumes_after_a_restart_without_running_a_line_twice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    extra = {"OPENMAAS_BATCH_CONCURRENCY": "2"}
    server = start_server(home, extra)
    total = 60
    try:
        model = build_gpt2(tmp_path / "gpt2")
        with Client(server.url, api_key=server.key) as sdk:
            sdk.register("restart-gpt2", PathSource(path=str(model)))
            key = sdk.create_key("batch-restart", ["inference"])
        bodies = {
            f"r{i}": {
                "model": "restart-gpt2",
                "messages": [{"role": "user", "content": f"Number {i}"}],
                "max_tokens": 8,
            }
            for i in range(total)
        }
        with openai_client(server, key.key) as tenant:
            created = run_batch(tenant, "/v1/chat/completions", bodies)
            partly = wait_for(
                tenant,
                created.id,
                lambda b: bool(b.request_counts and b.request_counts.completed >= 5),
            )
        assert partly.status == "in_progress", partly
    finally:
        stop_server(server)

    again = start_server(home, extra)
    try:
        with openai_client(again, key.key) as tenant:
            batch = wait_for(tenant, created.id)
            assert batch.status == "completed", batch
            assert batch.request_counts is not None
            assert batch.request_counts.completed == total
            assert set(lines_of(tenant, batch.output_file_id)) == set(bodies)
        # Each line ran once, across both servers: the key's chat requests number the lines.
        deadline = time.monotonic() + 30
        while True:
            usage = httpx_usage(again, key.id)
            if usage >= total or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert usage == total
    finally:
        stop_server(again)


def test_a_batch_survives_its_server_being_killed(tmp_path: Path) -> None:
    """kill -9 mid-batch: the next server takes the batch back once its heartbeat is stale and
    finishes it; every request is answered once in the output (the few in flight when the
    server died ran again; none answered before did)."""
    home = tmp_path / "home"
    extra = {
        "OPENMAAS_BATCH_CONCURRENCY": "2",
        "OPENMAAS_JOB_HEARTBEAT_S": "0.5",
        "OPENMAAS_JOB_HEARTBEAT_TIMEOUT_S": "2",
    }
    server = start_server(home, extra)
    total = 60
    try:
        model = build_gpt2(tmp_path / "gpt2")
        with Client(server.url, api_key=server.key) as sdk:
            sdk.register("crash-gpt2", PathSource(path=str(model)))
        bodies = {
            f"k{i}": {
                "model": "crash-gpt2",
                "messages": [{"role": "user", "content": f"Number {i}"}],
                "max_tokens": 8,
            }
            for i in range(total)
        }
        with openai_client(server) as admin:
            created = run_batch(admin, "/v1/chat/completions", bodies)
            partly = wait_for(
                admin,
                created.id,
                lambda b: bool(b.request_counts and b.request_counts.completed >= 5),
            )
        assert partly.status == "in_progress", partly
    finally:
        server.process.kill()
        server.process.wait()

    again = start_server(home, extra)
    try:
        with openai_client(again) as admin:
            batch = wait_for(admin, created.id)
            assert batch.status == "completed", batch
            assert batch.request_counts is not None
            assert batch.request_counts.completed == total
            assert set(lines_of(admin, batch.output_file_id)) == set(bodies)
            assert batch.error_file_id is None
    finally:
        stop_server(again)


def httpx_usage(server: RunningServer, key_id: int) -> int:
    report = authed.get(
        f"{server.url}/v1/usage", params={"key_id": key_id, "group_by": "route"}
    ).json()
    return sum(g["requests"] for g in report["data"] if g["route"] == "/v1/chat/completions")


# -- the SDK and the command line ------------------------------------------------------------


def test_the_sdk_and_the_cli_run_a_batch(serving_server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    bodies = {f"s{i}": {"model": "vader", "input": f"sentence {i} is lovely"} for i in range(2)}
    path.write_bytes(requests_file("/v1/classify", bodies))
    with Client(serving_server.url, api_key=serving_server.key) as sdk:
        uploaded = sdk.upload_file(path)
        assert uploaded.purpose == "batch"
        created = sdk.create_batch(uploaded.id, "/v1/classify", metadata={"by": "sdk"})
        batch = sdk.wait_for_batch(created.id, poll_s=0.2, timeout_s=WAIT_S)
        assert (batch.status, batch.request_counts.completed) == ("completed", 2)
        assert batch.metadata == {"by": "sdk"}
        assert created.id in [b.id for b in sdk.list_batches().data]
        answers = [
            json.loads(line) for line in sdk.file_content(batch.output_file_id or "").splitlines()
        ]
        assert [a["custom_id"] for a in answers] == ["s0", "s1"]

    env = {**os.environ, "OPENMAAS_URL": serving_server.url, "OPENMAAS_API_KEY": serving_server.key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(OPENMAAS), "batches", *args], env=env, capture_output=True, text=True, timeout=120
        )

    made = cli("create", str(path), "--endpoint", "/v1/classify", "--wait", "--json")
    assert made.returncode == 0, made.stderr
    batch_id = json.loads(made.stdout)["id"]
    assert json.loads(made.stdout)["status"] == "completed"
    shown = cli("show", batch_id)
    assert shown.returncode == 0, shown.stderr
    assert "2 completed, 0 failed, of 2" in shown.stdout
    output = cli("output", batch_id)
    assert output.returncode == 0, output.stderr
    assert [json.loads(line)["custom_id"] for line in output.stdout.splitlines()] == ["s0", "s1"]
    assert batch_id in cli("list").stdout
    no_errors = cli("output", batch_id, "--errors")
    assert no_errors.returncode == 1
    assert "has no error file" in no_errors.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a"}\n')
    failed = cli("create", str(bad), "--endpoint", "/v1/classify")
    assert failed.returncode == 1
    assert "invalid_method" in failed.stdout
