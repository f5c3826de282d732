"""Adding a task is one task contract plus a runtime: `tests/reverse_task.py` defines both,
registers them in the server's process, and the unchanged engine and routes serve it over
real HTTP (the v2 protocol through the official Triton client, and the /v1 error path)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

import openmaas.api.v2.adapter
import openmaas.api.v2.routes
import openmaas.serving.engine
from openmaas import Client
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.integration.test_v2_protocol import BearerAuth, text_input
from tests.reverse_task import TASK, write_model

pytestmark = pytest.mark.integration

MODEL = "reverser"
ROOT = Path(__file__).resolve().parents[2]  # where `tests` is importable from


@pytest.fixture(scope="module")
def reversing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose process registered the reverse-text task and runtime before serving,
    with a reverse-text model uploaded."""
    home = tmp_path_factory.mktemp("custom-task") / "home"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    running = start_server(home, {"PYTHONPATH": path}, module="tests.reverse_task")
    model_dir = write_model(home.parent / "reverser")
    with Client(running.url, api_key=running.key) as sdk:
        version = sdk.upload(MODEL, model_dir)
    assert version.task == TASK
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(reversing_server: RunningServer) -> Iterator[Any]:
    connection = triton.InferenceServerClient(url=reversing_server.url.removeprefix("http://"))
    connection.register_plugin(BearerAuth(reversing_server.key))
    yield connection
    connection.close()


def test_neither_the_engine_nor_the_routes_know_the_task() -> None:
    for module in (openmaas.serving.engine, openmaas.api.v2.routes, openmaas.api.v2.adapter):
        assert TASK not in inspect.getsource(module)


def test_a_registered_task_is_served_over_v2(client: Any) -> None:
    result = client.infer(MODEL, [text_input(["abc", "hello world"])])
    assert [v.decode() for v in result.as_numpy("REVERSED")] == ["cba", "dlrow olleh"]

    shouted = client.infer(MODEL, [text_input(["abc"])], parameters={"shout": True})
    assert [v.decode() for v in shouted.as_numpy("REVERSED")] == ["CBA"]


def test_its_tensors_are_described(client: Any) -> None:
    metadata = client.get_model_metadata(MODEL)
    assert metadata["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "REVERSED", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["parameters"]["task"] == TASK


def test_its_requests_are_checked_like_any_other(client: Any) -> None:
    with pytest.raises(InferenceServerException, match="not an output"):
        client.infer(MODEL, [text_input(["abc"])], outputs=[triton.InferRequestedOutput("X")])
    with pytest.raises(InferenceServerException, match="parameters.shout must be a bool"):
        client.infer(MODEL, [text_input(["abc"])], parameters={"shout": "yes"})
    too_long = " ".join(["word"] * 9)  # the model takes 8
    with pytest.raises(InferenceServerException, match="accepts at most 8"):
        client.infer(MODEL, [text_input([too_long])])
    truncated = client.infer(MODEL, [text_input([too_long])], parameters={"truncate": True})
    assert np.asarray(truncated.as_numpy("REVERSED")).shape == (1,)


def test_other_routes_refuse_it_as_the_wrong_task(reversing_server: RunningServer) -> None:
    response = httpx.post(
        f"{reversing_server.url}/v1/embeddings",
        json={"model": MODEL, "input": "abc"},
        headers=reversing_server.headers,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "wrong_task"
    assert error["param"] == "model"
    assert error["message"] == (
        f"model '{MODEL}' is a {TASK} model; /v1/embeddings needs an embedding model"
    )
