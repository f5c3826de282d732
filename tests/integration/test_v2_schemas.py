"""Every `/v2` health, metadata, repository and inference body validates against the Open
Inference Protocol's schemas (`tests/open_inference_schemas.py`, written from the specification,
which no package ships), on a real server: read through `tritonclient` where it hands back the
body, over plain HTTP where it gives only a status (the health routes, errors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton  # type: ignore[import-untyped]

from tests.integration import authed
from tests.integration.authed import AUTH
from tests.integration.conftest import RunningServer
from tests.open_inference_schemas import validate

ARTICLE = (
    "The city council met on Monday to discuss the new park. Residents asked for more trees. "
    "The council approved the budget for the park. Construction starts in the spring."
)
# A model of each text task with v2 tensors that loads in seconds, and its inputs.
INPUTS = {
    "all-minilm-l6-v2": ["The quick brown fox.", "OpenMaaS serves models."],
    "vader": ["I love this wonderful day", "This is a terrible, awful mess"],
    "en-core-web-sm": ["Barack Obama visited Paris in 2015."],
    "textrank": [ARTICLE],
}


def key() -> dict[str, str]:
    # A copy per call: tritonclient adds its own headers to the dict it is given.
    return dict(AUTH)


@pytest.fixture(scope="module")
def client(serving_server: RunningServer) -> Iterator[Any]:
    connection = triton.InferenceServerClient(url=serving_server.url.removeprefix("http://"))
    yield connection
    connection.close()


def test_health_bodies(serving_server: RunningServer) -> None:
    for path, schema in (
        ("/v2/health/live", "live_server_response"),
        ("/v2/health/ready", "ready_server_response"),
    ):
        response = httpx.get(f"{serving_server.url}{path}")
        assert response.status_code == 200, path
        validate(response.json(), schema)


def test_server_metadata_and_its_error(client: Any, serving_server: RunningServer) -> None:
    validate(client.get_server_metadata(headers=key()), "metadata_server_response")
    refused = httpx.get(f"{serving_server.url}/v2")  # no key
    assert refused.status_code == 401
    validate(refused.json(), "metadata_server_error_response")


def test_repository_index_and_the_metadata_of_every_version_in_it(
    client: Any, serving_server: RunningServer
) -> None:
    index = client.get_model_repository_index(headers=key())
    validate(index, "repository_index_response")
    assert set(INPUTS) <= {entry["name"] for entry in index}
    ready = authed.post(f"{serving_server.url}/v2/repository/index", json={"ready": True})
    assert ready.status_code == 200
    validate(ready.json(), "repository_index_response")
    for entry in index:
        for version in (None, entry["version"]):
            metadata = client.get_model_metadata(
                entry["name"], model_version=version or "", headers=key()
            )
            validate(metadata, "metadata_model_response")
            assert entry["version"] in metadata["versions"]

    missing = authed.get(f"{serving_server.url}/v2/models/no-such-model")
    assert missing.status_code == 404
    validate(missing.json(), "metadata_model_error_response")
    refused = authed.post(f"{serving_server.url}/v2/repository/index", json={"ready": "maybe"})
    assert refused.status_code == 400
    validate(refused.json(), "repository_index_error_response")


def test_model_ready_bodies_ready_and_not(serving_server: RunningServer) -> None:
    url = serving_server.url
    for path in ("vader/ready", "vader/versions/1/ready"):
        response = authed.get(f"{url}/v2/models/{path}")
        assert response.status_code == 200
        validate(response.json(), "ready_model_response")
        assert response.json()["ready"] is True

    authed.post(f"{url}/v2/repository/models/textrank/unload").raise_for_status()
    try:
        response = authed.get(f"{url}/v2/models/textrank/ready")
        assert response.status_code == 400
        validate(response.json(), "ready_model_response")
        assert response.json()["ready"] is False
    finally:
        # Other tests of the session summarize with it.
        authed.post(f"{url}/v2/repository/models/textrank/load").raise_for_status()


@pytest.mark.parametrize("model", INPUTS)
def test_inference_responses_json_and_binary(client: Any, model: str) -> None:
    texts = INPUTS[model]
    outputs = [o["name"] for o in client.get_model_metadata(model, headers=key())["outputs"]]
    for binary, schema in ((False, "inference_response"), (True, "binary_inference_response")):
        text = triton.InferInput("TEXT", [len(texts)], "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary)
        result = client.infer(
            model,
            [text],
            outputs=[triton.InferRequestedOutput(name, binary_data=binary) for name in outputs],
            request_id=f"schema-{model}",
            headers=key(),
        )
        body = result.get_response()
        validate(body, schema)
        assert [o["name"] for o in body["outputs"]] == outputs
        assert body["id"] == f"schema-{model}"


def test_inference_error_body(serving_server: RunningServer) -> None:
    tensor = {"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["hi"]}
    response = authed.post(f"{serving_server.url}/v2/models/vader/infer", json={"inputs": [tensor]})
    assert response.status_code == 400
    validate(response.json(), "inference_error_response")
