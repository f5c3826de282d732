"""A real server process on a free port, driven over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from openmaas import APIError, Client
from openmaas.auth.keys import generate_key

STARTUP_TIMEOUT_S = 300.0  # a server imports torch: minutes on a machine busy with other tests
# The admin key every test server imports (OPENMAAS_ADMIN_KEY) unless a test asks for the
# first-start behaviour, where the server generates one; its output is a file, not a terminal,
# so it writes the key to this file in its home, never to its log.
ADMIN_KEY = generate_key().plaintext
GENERATED_KEY_FILE = Path("secrets") / "admin-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningServer:
    url: str
    home: Path
    env: dict[str, str]  # the server's environment; OPENMAAS_API_KEY is its admin key
    process: subprocess.Popen[bytes]
    key: str  # an admin key of this server
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def start_server(
    home: Path,
    extra_env: Mapping[str, str | None] | None = None,
    *,
    admin_key: str | None = ADMIN_KEY,
    module: str = "openmaas.cli.main",
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> RunningServer:
    """Start `openmaas serve`; with `admin_key=None` the key it generates on first start is read
    (from its home's secrets/admin-key; "" when it generated none).
    `module` is the entry point run with `python -m` (a test's launcher that registers a
    task or runtime of its own before serving). `startup_timeout_s`: longer for a server that
    joins a Ray cluster first."""
    port = free_port()
    env = {
        **os.environ,
        "OPENMAAS_HOME": str(home),
        "OPENMAAS_CATALOG_AUTOREGISTER": "false",
        "OPENMAAS_LOG_LEVEL": "warning",
        # No training workers unless a test asks for them: each is a process of its own.
        "OPENMAAS_WORKERS": "0",
        # No ONNX variant jobs (on by default) unless a test asks for them: with a worker
        # they would export every transformers model a test registers, and they show in
        # the projects' job lists. tests/integration/test_variants.py runs the default.
        "OPENMAAS_AUTO_ONNX": "false",
        # One inference and one training thread (tests/conftest.py: OMP_NUM_THREADS): the
        # suite's processes already fill every core.
        "OPENMAAS_THREADS": "1",
        "OPENMAAS_TRAINING_THREADS": "1",
        **{name: value for name, value in (extra_env or {}).items() if value is not None},
    }
    # A None in `extra_env` leaves the variable unset: the server's default applies.
    for name in [name for name, value in (extra_env or {}).items() if value is None]:
        env.pop(name, None)
    env.pop("OPENMAAS_API_KEY", None)
    if admin_key is not None:
        env["OPENMAAS_ADMIN_KEY"] = admin_key
    log_path = home.parent / f"server-{port}.log"
    # The child gets its own copy of the descriptor; closing ours avoids a ResourceWarning
    # (an error under filterwarnings=error).
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                key = admin_key or generated_key(home)
                return RunningServer(
                    url=url,
                    home=home,
                    env={**env, "OPENMAAS_API_KEY": key},
                    process=process,
                    key=key,
                    log=log_path,
                )
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"server did not become ready in {startup_timeout_s} s; see {log_path}")


def generated_key(home: Path) -> str:
    path = home / GENERATED_KEY_FILE
    return path.read_text().strip() if path.exists() else ""


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def running_servers(
    homes: Sequence[Path], extra_env: Mapping[str, str | None]
) -> Iterator[list[RunningServer]]:
    """One `openmaas serve` per home, all with `extra_env`, as replicas behind a balancer.
    Started one after the other (the first migrates a shared database); every one started is
    stopped on the way out, also when a later one fails to start."""
    started: list[RunningServer] = []
    try:
        for home in homes:
            started.append(start_server(home, extra_env))
        yield started
    finally:
        for running in started:  # all asked at once: their graceful shutdowns overlap
            running.process.terminate()
        for running in reversed(started):
            stop_server(running)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server with its own home directory (SQLite + local artifacts)."""
    running = start_server(tmp_path / "home")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for a whole test module (starting one costs about a second).

    Tests that share it must not interfere: each uses its own model names.
    """
    running = start_server(tmp_path_factory.mktemp("shared") / "home")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(shared_server: RunningServer) -> Iterator[Client]:
    """The Python SDK pointed at the module's shared server."""
    with Client(shared_server.url, api_key=shared_server.key) as client:
        yield client


def assert_api_error(exc: pytest.ExceptionInfo[APIError], status: int, code: str) -> None:
    """The SDK error has this HTTP status and error code, and names its request id."""
    assert (exc.value.status_code, exc.value.code) == (status, code), exc.value.message
    assert exc.value.request_id


@pytest.fixture(scope="session")
def serving_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for every serving test: the built-in catalog registered (as `make serve`
    does), models loaded on first use. Tests register further models under their own names."""
    running = start_server(
        tmp_path_factory.mktemp("serving") / "home",
        {"OPENMAAS_CATALOG_AUTOREGISTER": "true", "OPENMAAS_THREADS": "2"},
    )
    yield running
    stop_server(running)
