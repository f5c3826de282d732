"""The SDK retries 429, 408 and 5xx answers as the `openai` client does, against real servers.

Two real servers: an OpenMaaS server whose brute-force guard answers a real 429 with
Retry-After (counted on its own /metrics), and, in front of a shared OpenMaaS server, a small
HTTP proxy of the test's own that answers the failures a test scripts (503, 429 with
Retry-After as seconds or an HTTP date, x-should-retry) and forwards everything else, so
each attempt is counted where it arrives and a retried request really reaches the server.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from openmaas import APIError, Client
from tests.integration.conftest import RunningServer, start_server, stop_server


@dataclass(frozen=True, slots=True)
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    method: str
    path: str
    body: bytes


class FaultyProxy:
    """Answers the next scripted `Fault`s itself, forwards every other request upstream."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # the test reads `attempts`, not a log

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.attempts.append(Attempt(self.command, self.path, body))
                    fault = proxy.faults.pop(0) if proxy.faults else None
                if fault is not None:
                    payload = json.dumps(
                        {"error": {"message": "scripted", "type": "x", "param": None, "code": "x"}}
                    ).encode()
                    self.send_response(fault.status)
                    for name, value in {
                        "Content-Type": "application/json",
                        **fault.headers,
                    }.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                skip = {"host", "content-length", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                answer = httpx.request(
                    self.command,
                    f"{proxy.upstream}{self.path}",
                    headers=headers,
                    content=body,
                    timeout=60.0,
                )
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def script(self, *faults: Fault) -> None:
        with self._lock:
            self.faults = list(faults)
            self.attempts = []

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture(scope="module")
def proxy(shared_server: RunningServer) -> Iterator[FaultyProxy]:
    with FaultyProxy(shared_server.url) as running:
        yield running


def _client(proxy: FaultyProxy, server: RunningServer, **options: int) -> Client:
    return Client(proxy.url, api_key=server.key, **options)


def test_5xx_answers_are_retried_until_one_succeeds(
    proxy: FaultyProxy, shared_server: RunningServer
) -> None:
    proxy.script(Fault(503), Fault(502))
    with _client(proxy, shared_server) as sdk:
        assert sdk.whoami().scopes == ["admin"]
    assert [a.path for a in proxy.attempts] == ["/v1/keys/self"] * 3


def test_a_post_is_retried_after_429_with_the_same_body(
    proxy: FaultyProxy, shared_server: RunningServer
) -> None:
    proxy.script(Fault(429, {"Retry-After": "1"}))
    with _client(proxy, shared_server) as sdk:
        project = sdk.create_project("retried-post", description="sent twice, made once")
    assert project.name == "retried-post"
    first, second = proxy.attempts
    assert first.method == second.method == "POST"
    assert first.body == second.body
    assert b"retried-post" in first.body


def test_retry_after_as_an_http_date_is_honoured(
    proxy: FaultyProxy, shared_server: RunningServer
) -> None:
    soon = email.utils.formatdate(time.time() + 1, usegmt=True)
    proxy.script(Fault(503, {"Retry-After": soon}))
    with _client(proxy, shared_server) as sdk:
        sdk.whoami()
    assert len(proxy.attempts) == 2


def test_x_should_retry_overrides_the_status(
    proxy: FaultyProxy, shared_server: RunningServer
) -> None:
    with _client(proxy, shared_server) as sdk:
        proxy.script(Fault(503, {"x-should-retry": "false"}))
        with pytest.raises(APIError) as refused:
            sdk.whoami()
        assert refused.value.status_code == 503
        assert len(proxy.attempts) == 1

        proxy.script(Fault(400, {"x-should-retry": "true"}))
        assert sdk.whoami().project == "default"
        assert len(proxy.attempts) == 2


def test_what_is_not_retried(proxy: FaultyProxy, shared_server: RunningServer) -> None:
    with _client(proxy, shared_server) as sdk:
        # A wait longer than the client would ever sleep: the error comes at once.
        proxy.script(Fault(429, {"Retry-After": "3600"}))
        with pytest.raises(APIError):
            sdk.whoami()
        assert len(proxy.attempts) == 1
        # A conflict with the server's state does not go away by asking again.
        proxy.script(Fault(409))
        with pytest.raises(APIError):
            sdk.whoami()
        assert len(proxy.attempts) == 1
        # Three failures exhaust the default two retries.
        proxy.script(Fault(500), Fault(500), Fault(500), Fault(500))
        with pytest.raises(APIError) as failed:
            sdk.whoami()
        assert failed.value.status_code == 500
        assert len(proxy.attempts) == 3
    with _client(proxy, shared_server, max_retries=0) as once:
        proxy.script(Fault(503))
        with pytest.raises(APIError):
            once.whoami()
        assert len(proxy.attempts) == 1


def test_an_upload_is_sent_again_whole(
    proxy: FaultyProxy, shared_server: RunningServer, tmp_path: Path
) -> None:
    data = tmp_path / "reviews.jsonl"
    lines = [
        json.dumps({"text": f"review {i}", "label": "pos" if i % 2 else "neg"}) for i in range(20)
    ]
    data.write_text("\n".join(lines) + "\n")
    proxy.script(Fault(503))
    with _client(proxy, shared_server) as sdk:
        dataset = sdk.upload_dataset(data)
        assert sdk.dataset_content(dataset.id) == data.read_bytes()
    first, second = proxy.attempts[:2]
    # Each attempt is a new multipart body (its own boundary) with the whole file in it.
    assert data.read_bytes() in first.body
    assert data.read_bytes() in second.body


def test_a_real_429_with_retry_after_is_waited_out(tmp_path: Path) -> None:
    """One wrong key blocks the address for 4 s: the server answers 429 with Retry-After
    to the next request whatever its key; the SDK waits that long and tries again."""
    server = start_server(
        tmp_path / "home",
        {
            "OPENMAAS_AUTH_FAILURES_BEFORE_DELAY": "1",
            "OPENMAAS_AUTH_FAILURES_BEFORE_BLOCK": "1",
            "OPENMAAS_AUTH_BLOCK_S": "4",
        },
    )
    try:
        wrong = httpx.get(
            f"{server.url}/v1/keys/self", headers={"Authorization": "Bearer om-nope_wrong"}
        )
        assert wrong.status_code == 401
        with (
            Client(server.url, api_key=server.key, max_retries=0) as once,
            pytest.raises(APIError) as refused,
        ):
            once.whoami()
        assert refused.value.status_code == 429
        assert refused.value.code == "too_many_auth_failures"
        with Client(server.url, api_key=server.key) as sdk:
            assert sdk.whoami().scopes == ["admin"]
        metrics = httpx.get(f"{server.url}/metrics", headers=server.headers).text
        # Both refusals were counted where they arrived: the one without retries, and the
        # first attempt of the retrying client (its second one was let in).
        assert 'openmaas_auth_attempts_total{outcome="refused"} 2.0' in metrics
    finally:
        stop_server(server)
