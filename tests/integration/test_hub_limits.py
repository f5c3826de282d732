"""Hub downloads against a real server over HTTP (issue 13): a registration from a Hugging Face
Hub repository whose files add up past OPENMAAS_MAX_HUB_DOWNLOAD_MB is refused 413 before a
byte of them is fetched, one under the bound registers and serves, and nothing downloaded
stays on the server.

The Hub here is a small server of the Hub's HTTP API (the paths and headers the
`huggingface_hub` client reads: model info with file sizes, the file tree, and `resolve/`
downloads with their commit and ETag headers) started by the test on a free loopback port; the
OpenMaaS server reaches it through `HF_ENDPOINT`, as it would a mirror.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from openmaas import APIError, Client
from openmaas.protocol.registry import HubSource
from tests.factories import write_hf_model
from tests.integration.conftest import RunningServer, assert_api_error, start_server, stop_server

MiB = 1024 * 1024
LIMIT_MB = 1


@dataclass
class HubRepo:
    """One repository at one commit: its files' bytes by repository path."""

    files: dict[str, bytes]
    commit: str = field(default_factory=lambda: hashlib.sha1(b"openmaas").hexdigest())

    def entry(self, path: str) -> dict[str, object]:
        data = self.files[path]
        return {"type": "file", "path": path, "size": len(data), "oid": _oid(data)}


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """The Hub's HTTP API for a few repositories, and a log of the files it served."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.downloads: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        for repo_id, repo in self.repos.items():
            info = f"/api/models/{repo_id}"  # (/revision/REV when one is asked for)
            tree = f"/api/models/{repo_id}/tree/"
            resolve = f"/{repo_id}/resolve/"
            if path == info or path.startswith(f"{info}/revision/"):
                siblings = [
                    {"rfilename": p, "size": len(d), "blobId": _oid(d)}
                    for p, d in repo.files.items()
                ]
                return _send_json(
                    handler, {"id": repo_id, "sha": repo.commit, "siblings": siblings}
                )
            if path.startswith(tree):
                return _send_json(handler, [repo.entry(p) for p in repo.files])
            if path.startswith(resolve):
                filename = path[len(resolve) :].split("/", 1)[1]
                if filename not in repo.files:
                    break
                data = repo.files[filename]
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(data)))
                handler.send_header("ETag", f'"{_oid(data)}"')
                handler.send_header("X-Repo-Commit", repo.commit)
                handler.end_headers()
                if body:
                    self.downloads.append(f"{repo_id}/{filename}")
                    handler.wfile.write(data)
                return None
        handler.send_response(404)
        handler.send_header("Content-Length", "0")
        handler.send_header("X-Error-Code", "RepoNotFound")
        handler.end_headers()
        return None


def _send_json(handler: BaseHTTPRequestHandler, payload: object) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


def _repo_files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    fake = FakeHub()
    model = _repo_files(write_hf_model(tmp_path_factory.mktemp("hub") / "model"))
    # Past the limit: a weights file of 2 MiB next to a model of a few KiB.
    fake.repos["org/big"] = HubRepo({**model, "extra.safetensors": b"\0" * (2 * MiB)})
    # Under it: files a registration never takes (a pickle here) count for nothing.
    fake.repos["org/small-with-pickle"] = HubRepo({**model, "pytorch_model.bin": b"\0" * (3 * MiB)})
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: FakeHub) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("hub-server") / "home",
        {
            "OPENMAAS_MAX_HUB_DOWNLOAD_MB": str(LIMIT_MB),
            "HF_ENDPOINT": hub.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


def _hub_cache(server: RunningServer) -> list[Path]:
    root = server.home / "artifacts" / "hub-cache"
    return sorted(root.rglob("*")) if root.is_dir() else []


def test_a_hub_repository_past_the_limit_is_refused_before_its_files_are_fetched(
    hub: FakeHub, server: RunningServer, admin: Client
) -> None:
    with pytest.raises(APIError) as refused:
        admin.register("hub-big", HubSource(repo_id="org/big"))
    assert_api_error(refused, 413, "payload_too_large")
    assert "'org/big' holds 2.0 MiB" in refused.value.message
    assert "OPENMAAS_MAX_HUB_DOWNLOAD_MB" in refused.value.message
    assert [d for d in hub.downloads if d.startswith("org/big/")] == []
    assert _hub_cache(server) == []
    assert not _exists(admin, "hub-big") or admin.list_versions("hub-big") == []


def test_a_hub_repository_under_the_limit_registers_serves_and_leaves_no_download(
    hub: FakeHub, server: RunningServer, admin: Client
) -> None:
    version = admin.register("hub-small", HubSource(repo_id="org/small-with-pickle"))
    assert version.version == 1
    assert version.lineage.source["type"] == "hub"
    assert version.lineage.source["repo_id"] == "org/small-with-pickle"
    stored = {f.path for f in version.files}
    assert {"config.json", "model.safetensors", "vocab.txt"} <= stored
    # The pickle counted for nothing and was never fetched.
    assert "pytorch_model.bin" not in stored
    assert "org/small-with-pickle/pytorch_model.bin" not in hub.downloads
    assert "org/small-with-pickle/model.safetensors" in hub.downloads
    assert _hub_cache(server) == []
    answer = httpx.post(
        f"{server.url}/v1/classify",
        json={"model": "hub-small:1", "input": "w1 w2 w3"},
        headers=server.headers,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"][0]["label"] in {"negative", "positive"}


def _exists(client: Client, name: str) -> bool:
    try:
        client.get_model(name)
    except APIError:
        return False
    return True
