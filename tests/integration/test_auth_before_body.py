"""A request's key (and the route's scope) is checked before any byte of its body is read.

Against a real server over real sockets: each refusal arrives while the client has sent only
the first 64 KiB of a body it never finishes (a server that waited for the body would never
answer), or while a 64 MiB upload has barely started streaming. Also: the large upload limit
applies to the upload routes only, and an oversized chunked body answers 413.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openmaas import Client
from tests.integration.conftest import RunningServer, start_server, stop_server

MiB = 1024 * 1024
FIRST_CHUNK = 64 * 1024
ANSWER_TIMEOUT_S = 10.0
WRONG_KEY = "om-abcdefgh_not-a-key-of-this-server"

# A route that takes an archive, one that takes a multipart file, JSON routes (one of them a
# path ending in /upload, which used to get the upload limit), and /v2.
ROUTES = [
    ("POST", "/v1/registry/models/intake-m/versions/upload"),
    ("POST", "/v1/files"),
    ("POST", "/v1/embeddings"),
    ("PUT", "/v1/registry/models/intake-m/aliases/upload"),
    ("POST", "/v2/models/vader/infer"),
]


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # Thresholds high enough that this module's wrong keys never block 127.0.0.1.
    running = start_server(
        tmp_path_factory.mktemp("intake") / "home",
        {
            "OPENMAAS_AUTH_FAILURES_BEFORE_DELAY": "1000",
            "OPENMAAS_AUTH_FAILURES_BEFORE_BLOCK": "1000",
        },
    )
    yield running
    stop_server(running)


def partial_request(
    server: RunningServer, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    """Send the headers and the first 64 KiB of a chunked body that never ends; return the
    answer's status and JSON body. Fails if no answer comes: the server waits for the body."""
    port = int(server.url.rsplit(":", 1)[1])
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
    lines += ["Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    chunk = f"{FIRST_CHUNK:x}\r\n".encode() + b"x" * FIRST_CHUNK + b"\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + chunk)
        sock.settimeout(ANSWER_TIMEOUT_S)
        received = b""
        try:
            while not received.endswith(b"0\r\n\r\n"):  # the end of a chunked answer
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        except TimeoutError:
            pytest.fail(f"no answer to {method} {path} before its body ended: {received!r}")
    status_line, _, rest = received.partition(b"\r\n")
    _, _, chunked = rest.partition(b"\r\n\r\n")
    size, _, payload = chunked.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(payload[: int(size, 16)])


def error_code(answer: dict[str, object], path: str) -> str:
    if path.startswith("/v2/"):
        return str(answer["error"])  # the Open Inference Protocol's shape: the message
    error = answer["error"]
    assert isinstance(error, dict)
    return str(error["code"])


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("key", [None, WRONG_KEY], ids=["no-key", "wrong-key"])
def test_a_request_without_a_usable_key_is_refused_before_its_body(
    intake: RunningServer, method: str, path: str, key: str | None
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    status, answer = partial_request(intake, method, path, headers)
    assert status == 401, answer
    if path.startswith("/v2/"):
        assert "API key" in error_code(answer, path)
    else:
        assert error_code(answer, path) == ("invalid_api_key" if key else "missing_api_key")


def test_a_key_without_the_route_scope_is_refused_before_the_body(intake: RunningServer) -> None:
    # A reader of models may upload neither models nor files (/v1/files takes the training
    # and the inference scopes: datasets and batch requests).
    with Client(intake.url, api_key=intake.key) as admin:
        reader = admin.create_key(f"app-{uuid.uuid4().hex[:6]}", ["models:read"]).key
    bearer = {"Authorization": f"Bearer {reader}"}
    for method, path in ROUTES[:2] + ROUTES[3:4]:
        status, answer = partial_request(intake, method, path, bearer)
        assert (status, error_code(answer, path)) == (403, "insufficient_scope"), path


def test_a_good_key_is_still_served(intake: RunningServer) -> None:
    """The control: with the admin key the server reads the body (and here finds it wrong)."""
    answer = httpx.post(
        f"{intake.url}/v1/registry/models/intake-m/versions/upload",
        files={"file": ("m.tar.gz", b"not an archive")},
        headers=intake.headers,
    )
    assert answer.status_code == 400, answer.text


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("key", [None, WRONG_KEY], ids=["no-key", "wrong-key"])
def test_a_64_mib_upload_without_a_key_is_answered_after_its_first_chunks(
    intake: RunningServer, key: str | None
) -> None:
    """The audit's attack: before, the whole body was read (server memory 379 -> 1,121 MiB
    for 256 MiB) and only then refused."""
    pulled = 0

    def body() -> Iterator[bytes]:
        nonlocal pulled
        for _ in range(64 * MiB // FIRST_CHUNK):
            pulled += FIRST_CHUNK
            yield b"x" * FIRST_CHUNK

    before = _rss_bytes(intake.process.pid)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(
        f"{intake.url}/v1/registry/models/intake-m/versions/upload",
        content=body(),
        headers={**headers, "Content-Type": "multipart/form-data; boundary=x"},
    )
    assert answer.status_code == 401
    # The client stops sending when the server answers and closes the connection: it had
    # pulled a few socket buffers' worth, far from the 64 MiB.
    assert pulled <= 8 * MiB, pulled
    assert _rss_bytes(intake.process.pid) - before < 16 * MiB


def test_the_upload_limit_applies_to_upload_routes_only(intake: RunningServer) -> None:
    """17 MiB: over the 16 MiB every JSON route takes, under the upload limit."""
    port = int(intake.url.rsplit(":", 1)[1])
    declared = 17 * MiB
    head = (
        "PUT /v1/registry/models/intake-m/aliases/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {intake.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode())  # the limit is known from the header: no body needed
        sock.settimeout(ANSWER_TIMEOUT_S)
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
    # The real upload route takes it (and then finds it is not an archive).
    upload = httpx.post(
        f"{intake.url}/v1/registry/models/intake-m/versions/upload",
        files={"file": ("m.tar.gz", b"\0" * declared)},
        headers=intake.headers,
        timeout=60,
    )
    assert upload.status_code == 400, upload.text[:300]


def test_an_oversized_chunked_body_answers_413(intake: RunningServer) -> None:
    """No Content-Length: the limit is met while reading; it answered 400 before."""

    def body() -> Iterator[bytes]:
        for _ in range(17 * MiB // FIRST_CHUNK):
            yield b"x" * FIRST_CHUNK

    answer = httpx.post(f"{intake.url}/v1/embeddings", content=body(), headers=intake.headers)
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert "16 MiB" in answer.json()["error"]["message"]


def test_public_routes_stay_open(intake: RunningServer) -> None:
    for path in ("/livez", "/readyz", "/openapi.json", "/docs"):
        assert httpx.get(f"{intake.url}{path}").status_code == 200, path
    assert httpx.get(f"{intake.url}/metrics").status_code == 401
    missing = httpx.post(f"{intake.url}/v1/no-such-route", content=b"{}")
    assert missing.status_code == 404


def test_refusals_are_counted_under_their_route(intake: RunningServer) -> None:
    assert httpx.post(f"{intake.url}/v1/embeddings", json={}).status_code == 401
    text = httpx.get(f"{intake.url}/metrics", headers=intake.headers).text
    assert 'route="/v1/embeddings",status="4xx"' in text


def test_wrong_keys_with_bodies_meet_the_brute_force_guard(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "home",
        {
            "OPENMAAS_AUTH_FAILURES_BEFORE_DELAY": "10",
            "OPENMAAS_AUTH_FAILURES_BEFORE_BLOCK": "3",
            "OPENMAAS_AUTH_BLOCK_S": "60",
        },
    )
    try:
        upload = "/v1/registry/models/intake-m/versions/upload"
        wrong = {"Authorization": f"Bearer {WRONG_KEY}"}
        statuses = [partial_request(server, "POST", upload, wrong)[0] for _ in range(3)]
        assert statuses == [401, 401, 401]
        status, answer = partial_request(server, "POST", upload, wrong)
        assert (status, error_code(answer, upload)) == (429, "too_many_auth_failures")
    finally:
        stop_server(server)


def test_dev_no_auth_serves_bodies_without_a_key(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", {"OPENMAAS_DEV_NO_AUTH": "true"}, admin_key=None)
    try:
        answer = httpx.post(
            f"{server.url}/v1/registry/models/intake-m/versions/upload",
            files={"file": ("m.tar.gz", b"not an archive")},
        )
        assert answer.status_code == 400, answer.text  # served: the archive is refused
    finally:
        stop_server(server)
