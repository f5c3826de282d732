"""The Open Inference Protocol v2 with NVIDIA's own client, `tritonclient.http`, against a real
server: health, metadata, config, binary and JSON tensors, the repository API and errors."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton  # type: ignore[import-untyped]
from tritonclient.http import InferenceServerClientPlugin  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from tests.integration import authed
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.runtimes.tiny_models import build_bert

EMBEDDER = "all-minilm-l6-v2"


class BearerAuth(InferenceServerClientPlugin):  # type: ignore[misc]
    """tritonclient's plugin hook, the documented way to add a header to every call."""

    def __init__(self, key: str) -> None:
        self.value = f"Bearer {key}"

    def __call__(self, request: Any) -> None:
        request.headers["authorization"] = self.value


@pytest.fixture(scope="module")
def client(serving_server: RunningServer) -> Iterator[Any]:
    connection = triton.InferenceServerClient(url=serving_server.url.removeprefix("http://"))
    connection.register_plugin(BearerAuth(serving_server.key))
    yield connection
    connection.close()


def text_input(texts: list[str], *, binary: bool = True, name: str = "TEXT") -> Any:
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary)
    return tensor


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- server -------------------------------------------------------------------------------------


def test_server_is_live_ready_and_describes_itself(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "openmaas"
    assert metadata["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(metadata["extensions"])


def test_health_and_model_ready_answer_the_protocol_bodies(serving_server: RunningServer) -> None:
    url = serving_server.url
    live = httpx.get(f"{url}/v2/health/live")  # probes need no key
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = httpx.get(f"{url}/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})

    authed.post(f"{url}/v2/repository/models/textrank/load").raise_for_status()
    for path in ("textrank/ready", "textrank/versions/1/ready"):
        response = authed.get(f"{url}/v2/models/{path}")
        assert (response.status_code, response.json()) == (200, {"name": "textrank", "ready": True})
    authed.post(f"{url}/v2/repository/models/textrank/unload").raise_for_status()
    response = authed.get(f"{url}/v2/models/textrank/ready")
    assert response.status_code == 400  # Triton's status for a known model that is not ready
    body = response.json()
    assert (body["name"], body["ready"]) == ("textrank", False)
    assert "unloaded" in body["reason"]
    assert "POST /v2/repository/models/textrank:1/load" in body["reason"]
    authed.post(f"{url}/v2/repository/models/textrank/load").raise_for_status()


def test_model_metadata_and_config_describe_the_tensors(client: Any) -> None:
    metadata = client.get_model_metadata(EMBEDDER)
    assert metadata["name"] == EMBEDDER
    assert metadata["platform"] == "transformers"
    assert "1" in metadata["versions"]
    assert metadata["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, 384]}]
    assert client.get_model_metadata(EMBEDDER, model_version="1")["outputs"] == metadata["outputs"]

    config = client.get_model_config(EMBEDDER)
    assert config["name"] == EMBEDDER
    assert config["platform"] == "transformers"
    assert config["max_batch_size"] > 0
    assert config["input"] == [
        {"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}}
    ]
    assert config["output"] == [{"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": [384]}]


# -- inference ----------------------------------------------------------------------------------


def test_embeddings_binary_and_json_equal_the_openai_route(
    client: Any, serving_server: RunningServer
) -> None:
    texts = ["The quick brown fox jumps over the lazy dog.", "OpenMaaS serves models."]
    binary = client.infer(EMBEDDER, [text_input(texts)], request_id="req-binary")
    assert binary.get_response()["id"] == "req-binary"
    assert binary.get_output("EMBEDDING")["parameters"]["binary_data_size"] == 2 * 384 * 4
    from_binary = binary.as_numpy("EMBEDDING")
    assert from_binary.shape == (2, 384)
    assert from_binary.dtype == np.float32

    as_json = client.infer(
        EMBEDDER,
        [text_input(texts, binary=False)],
        outputs=[triton.InferRequestedOutput("EMBEDDING", binary_data=False)],
        model_version="1",
    )
    assert "data" in as_json.get_output("EMBEDDING")
    from_json = as_json.as_numpy("EMBEDDING")

    response = authed.post(
        f"{serving_server.url}/v1/embeddings", json={"model": EMBEDDER, "input": texts}
    )
    response.raise_for_status()
    for index, item in enumerate(response.json()["data"]):
        reference = np.asarray(item["embedding"], dtype=np.float32)
        assert cosine(from_binary[index], reference) > 0.9999
        assert cosine(from_json[index], reference) > 0.9999


def test_classification_gives_the_top_label_and_every_score(client: Any) -> None:
    texts = ["I love this wonderful day", "This is a terrible, awful mess"]
    result = client.infer("vader", [text_input(texts)])
    assert [v.decode() for v in result.as_numpy("LABEL")] == ["positive", "negative"]
    scores = result.as_numpy("SCORES")
    labels = json.loads(client.get_model_metadata("vader")["parameters"]["labels"])
    assert scores.shape == (2, len(labels))
    assert [labels[i] for i in scores.argmax(axis=1)] == ["positive", "negative"]
    np.testing.assert_allclose(result.as_numpy("SCORE"), scores.max(axis=1), rtol=1e-6)

    only_label = client.infer(
        "vader", [text_input(texts[:1])], outputs=[triton.InferRequestedOutput("LABEL")]
    )
    assert [o["name"] for o in only_label.get_response()["outputs"]] == ["LABEL"]


def test_entities_come_back_as_one_json_document_per_input(client: Any) -> None:
    texts = ["Barack Obama visited Paris in 2015.", "Nothing to see here."]
    result = client.infer("en-core-web-sm", [text_input(texts, binary=False)])
    documents = [json.loads(v) for v in result.as_numpy("ENTITIES")]
    assert len(documents) == 2
    found = {(e["text"], e["label"]) for e in documents[0]}
    assert ("Barack Obama", "PERSON") in found
    assert ("Paris", "GPE") in found
    assert texts[0][documents[0][0]["start"] : documents[0][0]["end"]] == documents[0][0]["text"]


ARTICLE = (
    "The city council met on Monday to discuss the new park. Residents asked for more trees. "
    "The council approved the budget for the park. Construction starts in the spring. "
    "The mayor said the park would open next year."
)


def test_repository_load_unload_and_index(client: Any, serving_server: RunningServer) -> None:
    client.unload_model("textrank")
    client.unload_model("textrank")  # unloading an unloaded model succeeds, as in Triton
    assert not client.is_model_ready("textrank")
    index = {e["name"]: e for e in client.get_model_repository_index()}
    assert {EMBEDDER, "vader", "textrank"} <= set(index)
    assert index["textrank"]["state"] == "UNAVAILABLE"

    # An inference request does not load it again: 404, as Triton answers for an unloaded
    # model, on every route, saying how to load it.
    message = infer_error(client, "textrank", [text_input([ARTICLE])])
    assert message.startswith("[404]")
    assert "unloaded" in message
    assert "load_model" in message
    refused = authed.post(
        f"{serving_server.url}/v1/summarize", json={"model": "textrank", "input": ARTICLE}
    )
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_unloaded"
    assert "POST /v2/repository/models/textrank:1/load" in refused.json()["error"]["message"]
    assert not client.is_model_ready("textrank")

    client.load_model("textrank")  # other tests of the session summarize with it
    assert client.is_model_ready("textrank")
    assert client.is_model_ready("textrank", model_version="1")
    index = {e["name"]: e for e in client.get_model_repository_index()}
    assert index["textrank"] == {"name": "textrank", "version": "1", "state": "READY", "reason": ""}
    summary = client.infer("textrank", [text_input([ARTICLE])]).as_numpy("TEXT_OUT")
    assert summary.shape == (1,)
    assert summary[0].decode().strip()
    assert not client.is_model_ready("no-such-model")


def test_the_repository_index_lists_every_version(
    serving_server: RunningServer, tmp_path: Path
) -> None:
    url, name = serving_server.url, "index-versions"
    for seed in (0, 1):
        directory = build_bert(tmp_path / f"v{seed}", seed=seed)
        source = {"type": "path", "path": str(directory)}
        registered = authed.post(
            f"{url}/v1/registry/models/{name}/versions", json={"source": source}
        )
        assert registered.status_code == 201, registered.text

    def index(ready: bool = False) -> dict[str, dict[str, str]]:
        entries = authed.post(f"{url}/v2/repository/index", json={"ready": ready}).json()
        return {e["version"]: e for e in entries if e["name"] == name}

    assert set(index()) == {"1", "2"}  # one entry per version, not per model
    authed.post(f"{url}/v2/repository/models/{name}:1/load").raise_for_status()
    authed.post(f"{url}/v2/repository/models/{name}:2/unload").raise_for_status()
    entries = index()
    assert (entries["1"]["state"], entries["1"]["reason"]) == ("READY", "")
    assert (entries["2"]["state"], entries["2"]["reason"]) == ("UNAVAILABLE", "unloaded")
    assert set(index(ready=True)) == {"1"}
    assert authed.get(f"{url}/v2/models/{name}/versions/2/ready").status_code == 400


@pytest.fixture(scope="module")
def reloading_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The catalog registered, nothing loaded yet, and unloaded models loaded on demand."""
    running = start_server(
        tmp_path_factory.mktemp("reloading") / "home",
        {
            "OPENMAAS_CATALOG_AUTOREGISTER": "true",
            "OPENMAAS_THREADS": "2",
            "OPENMAAS_RELOAD_UNLOADED": "true",
        },
    )
    yield running
    stop_server(running)


def test_a_registered_model_is_ready_before_its_first_load(reloading_server: RunningServer) -> None:
    url = reloading_server.url
    # Nothing has used vader on this server: not loaded, but servable, so ready.
    response = authed.get(f"{url}/v2/models/vader/ready")
    assert (response.status_code, response.json()) == (200, {"name": "vader", "ready": True})
    index = {e["name"]: e for e in authed.post(f"{url}/v2/repository/index", json={}).json()}
    assert index["vader"]["state"] == "READY"
    assert index["vader"]["reason"] == "not loaded: loads on its first request"


def test_with_reload_unloaded_an_inference_request_loads_an_unloaded_model_again(
    reloading_server: RunningServer,
) -> None:
    connection = triton.InferenceServerClient(url=reloading_server.url.removeprefix("http://"))
    connection.register_plugin(BearerAuth(reloading_server.key))
    try:
        connection.load_model("vader")
        connection.unload_model("vader")
        assert connection.is_model_ready("vader")  # the next request loads it
        result = connection.infer("vader", [text_input(["I love this wonderful day"])])
        assert [v.decode() for v in result.as_numpy("LABEL")] == ["positive"]
        index = {e["name"]: e for e in connection.get_model_repository_index()}
        assert (index["vader"]["state"], index["vader"]["reason"]) == ("READY", "")
    finally:
        connection.close()


# -- errors -------------------------------------------------------------------------------------


def infer_error(client: Any, model: str, inputs: list[Any], **options: Any) -> str:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, inputs, **options)
    return str(raised.value)


def test_errors_are_4xx_with_messages_that_name_the_fix(client: Any) -> None:
    message = infer_error(client, "no-such-model", [text_input(["hi"])])
    assert message.startswith("[404]")
    assert "no-such-model" in message

    message = infer_error(client, EMBEDDER, [text_input(["hi"], name="INPUT0")])
    assert message.startswith("[400]")
    assert "TEXT (BYTES" in message
    assert "INPUT0" in message

    numbers = triton.InferInput("TEXT", [1], "FP32")
    numbers.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    message = infer_error(client, EMBEDDER, [numbers])
    assert message.startswith("[400]")
    assert "FP32" in message
    assert "BYTES" in message

    message = infer_error(
        client, EMBEDDER, [text_input(["hi"])], outputs=[triton.InferRequestedOutput("LOGITS")]
    )
    assert message.startswith("[400]")
    assert "EMBEDDING" in message

    message = infer_error(client, EMBEDDER, [text_input(["hi"])], model_version="latest")
    assert message.startswith("[400]")

    with pytest.raises(InferenceServerException, match=r"^\[404\]"):
        client.get_model_metadata("no-such-model")


def test_v2_error_bodies_are_plain_strings(serving_server: RunningServer) -> None:
    response = authed.post(
        f"{serving_server.url}/v2/models/{EMBEDDER}/infer",
        content=b'{"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES"}]}',
    )
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
    assert "no data" in response.json()["error"]

    response = authed.post(
        f"{serving_server.url}/v2/models/{EMBEDDER}/infer",
        content=b'{"inputs": []}XXXX',
        headers={"Inference-Header-Content-Length": "14"},
    )
    assert response.status_code == 400
    assert "binary_data_size" in response.json()["error"]


def test_speech_takes_the_audio_file_as_one_bytes_element(client: Any) -> None:
    samples = np.zeros(8_000, dtype="<i2")  # half a second of silence: a quick decode
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16_000)
        wav.writeframes(samples.tobytes())
    audio = triton.InferInput("AUDIO", [1], "BYTES")
    audio.set_data_from_numpy(np.array([buffer.getvalue()], dtype=object))
    inputs = client.get_model_metadata("whisper-tiny-en")["inputs"]
    assert inputs == [{"name": "AUDIO", "datatype": "BYTES", "shape": [1]}]
    result = client.infer("whisper-tiny-en", [audio], parameters={"language": "en"})
    assert result.as_numpy("TEXT_OUT").shape == (1,)
