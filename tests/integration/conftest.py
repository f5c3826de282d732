"""A real server process on a free port, driven over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningServer:
    url: str
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]


def start_server(home: Path, extra_env: dict[str, str] | None = None) -> RunningServer:
    port = free_port()
    env = {
        **os.environ,
        "OPENMAAS_HOME": str(home),
        "OPENMAAS_CATALOG_AUTOREGISTER": "false",
        "OPENMAAS_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    log = (home.parent / f"server-{port}.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openmaas.cli.main",
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
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log.name}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return RunningServer(url=url, home=home, env=env, process=process)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not become ready in {STARTUP_TIMEOUT_S} s")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server with its own home directory (SQLite + local artifacts)."""
    running = start_server(tmp_path / "home")
    yield running
    stop_server(running)
