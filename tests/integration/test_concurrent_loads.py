"""One slow model load does not hold up another model's first request, against a real server
over real HTTP (the pool used to load one model at a time behind a global lock: 50 models under
a 2 GB budget, 4 clients, p99 5.4 s against a 0.45 s load)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openmaas import Client
from tests.gated_loads import write_model
from tests.integration import authed
from tests.integration.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]  # where `tests` is importable from


@pytest.fixture
def gated_server(tmp_path: Path) -> Iterator[RunningServer]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    running = start_server(tmp_path / "home", {"PYTHONPATH": path}, module="tests.gated_loads")
    yield running
    stop_server(running)


def reverse(server: RunningServer, model: str, *, timeout: float) -> httpx.Response:
    body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["abc"]}]}
    return authed.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=timeout)


def test_a_model_loads_while_another_models_load_is_in_progress(
    gated_server: RunningServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    with Client(gated_server.url, api_key=gated_server.key) as sdk:
        sdk.upload("slow", write_model(tmp_path / "slow"), params={"load_gate": str(gate)})
        sdk.upload("quick", write_model(tmp_path / "quick"))
    slow: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: slow.append(reverse(gated_server, "slow", timeout=60))
    )
    waiting.start()
    writer = os.open(gate, os.O_WRONLY)  # returns once the slow load has opened the gate
    try:
        quick = reverse(gated_server, "quick", timeout=30)  # behind a global lock: a timeout
        assert quick.status_code == 200, quick.text
        assert quick.json()["outputs"][0]["data"] == ["cba"]
        assert not slow  # the slow load is still held at its gate
    finally:
        os.close(writer)  # the slow load goes on
        waiting.join(60)
    assert slow[0].status_code == 200, slow[0].text
