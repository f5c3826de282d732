"""Keras 3 `.keras` text classifiers, built and saved by the test, uploaded to a real server and
served on /v1/classify and /v2 (tritonclient) on Keras's PyTorch backend; files whose loading
would run code, and files that are no Keras model, are refused at registration."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton  # type: ignore[import-untyped]

from openmaas import APIError, Client
from tests.integration import authed
from tests.integration.conftest import RunningServer, assert_api_error
from tests.integration.job_servers import blocks, cli_env, run_cli, run_script
from tests.integration.test_v2_protocol import BearerAuth, text_input
from tests.integration.waiting import wait_for
from tests.runtimes.keras_models import (
    TEXTS,
    BuiltModel,
    lambda_model,
    text_vectorization_lstm,
    tokenizer_gru,
    vocabulary_conv1d,
)

# Keras's model.predict on torch: numpy's DeprecationWarning about __array__(copy=...).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "keras.md"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltModel]:
    root = tmp_path_factory.mktemp("keras")
    return {
        "keras-lstm": text_vectorization_lstm(root / "lstm"),
        "keras-conv": vocabulary_conv1d(root / "conv"),
        "keras-gru": tokenizer_gru(root / "gru"),
    }


@pytest.fixture(scope="module")
def registered(built: dict[str, BuiltModel], sdk: Client) -> dict[str, BuiltModel]:
    for name, model in built.items():
        # keras-conv's class names come as a param; the others' as labels.txt / labels.json.
        labels = {"labels": ["negative", "positive"]} if name == "keras-conv" else None
        version = sdk.upload(name, model.directory, params=labels)
        assert (version.task, version.runtime, version.format) == (
            "text-classification",
            "keras",
            "keras",
        )
    return built


@pytest.fixture(scope="module")
def triton_client(shared_server: RunningServer) -> Iterator[Any]:
    connection = triton.InferenceServerClient(url=shared_server.url.removeprefix("http://"))
    connection.register_plugin(BearerAuth(shared_server.key))
    yield connection
    connection.close()


def _scores(data: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    return np.array(
        [[s["score"] for s in sorted(d["labels"], key=lambda s: s["label"])] for d in data]
    )


@pytest.mark.parametrize("name", ["keras-lstm", "keras-conv", "keras-gru"])
def test_classify_gives_what_keras_computes(
    name: str, registered: dict[str, BuiltModel], shared_server: RunningServer
) -> None:
    response = authed.post(f"{shared_server.url}/v1/classify", json={"model": name, "input": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    # Labels sort as negative, positive: the columns of Keras's own output.
    np.testing.assert_allclose(_scores(body["data"]), registered[name].expected, atol=1e-5)
    assert [d["label"] for d in body["data"]] == [
        ["negative", "positive"][i] for i in registered[name].expected.argmax(axis=1)
    ]
    assert body["usage"]["prompt_tokens"] > len(TEXTS)


def test_v2_infer_with_tritonclient(registered: dict[str, BuiltModel], triton_client: Any) -> None:
    result = triton_client.infer("keras-lstm", [text_input(TEXTS)])
    np.testing.assert_allclose(
        result.as_numpy("SCORES"), registered["keras-lstm"].expected, atol=1e-5
    )
    expected = [["negative", "positive"][i] for i in registered["keras-lstm"].expected.argmax(1)]
    assert [v.decode() for v in result.as_numpy("LABEL")] == expected


def test_a_keras_file_with_its_preprocessing_inside_uploads_on_its_own(
    registered: dict[str, BuiltModel], shared_server: RunningServer, sdk: Client
) -> None:
    path = registered["keras-lstm"].directory / "sentiment.keras"
    ran = run_cli(shared_server, "models", "register", "keras-single", str(path), "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["runtime"] == "keras"
    response = authed.post(
        f"{shared_server.url}/v1/classify", json={"model": "keras-single", "input": TEXTS[:1]}
    )
    assert response.status_code == 200, response.text
    # No labels beside it: the classes are named by position, unless the registration names them.
    assert {s["label"] for s in response.json()["data"][0]["labels"]} == {"LABEL_0", "LABEL_1"}
    labels = 'labels=["negative", "positive"]'
    ran = run_cli(shared_server, "models", "register", "keras-single", str(path), "--param", labels)
    assert ran.returncode == 0, ran.stderr
    named = authed.post(
        f"{shared_server.url}/v1/classify", json={"model": "keras-single:2", "input": TEXTS[:1]}
    )
    assert {s["label"] for s in named.json()["data"][0]["labels"]} == {"negative", "positive"}


def test_lambda_layer_is_refused_at_registration(tmp_path: Path, sdk: Client) -> None:
    with pytest.raises(APIError) as refused:
        sdk.upload("keras-lambda", lambda_model(tmp_path / "lambda"))
    assert_api_error(refused, 400, "unsafe_artifact")
    assert "Lambda" in refused.value.message
    assert "lambda.keras" in refused.value.message


def test_custom_layer_is_refused_at_registration(
    built: dict[str, BuiltModel], tmp_path: Path, sdk: Client
) -> None:
    directory = tmp_path / "custom"
    directory.mkdir()
    source = built["keras-conv"].directory
    with zipfile.ZipFile(source / "reviews.keras") as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    # A layer of the user's own package: Keras would import `evil_layers` to load it.
    members["config.json"] = members["config.json"].replace(
        b'"module": "keras.layers", "class_name": "Conv1D"',
        b'"module": "evil_layers", "class_name": "Conv1D"',
    )
    assert b"evil_layers" in members["config.json"]
    with zipfile.ZipFile(directory / "reviews.keras", "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    (directory / "vocabulary.txt").write_bytes((source / "vocabulary.txt").read_bytes())
    with pytest.raises(APIError) as refused:
        sdk.upload("keras-custom", directory)
    assert_api_error(refused, 400, "unsafe_artifact")
    assert "evil_layers" in refused.value.message


def test_corrupt_file_is_refused_at_registration(
    built: dict[str, BuiltModel], tmp_path: Path, sdk: Client
) -> None:
    directory = tmp_path / "corrupt"
    directory.mkdir()
    whole = (built["keras-conv"].directory / "reviews.keras").read_bytes()
    (directory / "reviews.keras").write_bytes(whole[: len(whole) // 2])
    (directory / "vocabulary.txt").write_text("great\nfilm\n", encoding="utf-8")
    with pytest.raises(APIError) as refused:
        sdk.upload("keras-corrupt", directory)
    assert_api_error(refused, 400, "unsupported_source")
    assert "not a Keras 3 .keras file" in refused.value.message


def test_token_id_model_without_its_vocabulary_is_refused(
    built: dict[str, BuiltModel], tmp_path: Path, sdk: Client
) -> None:
    directory = tmp_path / "novocab"
    directory.mkdir()
    (directory / "reviews.keras").write_bytes(
        (built["keras-conv"].directory / "reviews.keras").read_bytes()
    )
    with pytest.raises(APIError) as refused:
        sdk.upload("keras-novocab", directory)
    assert_api_error(refused, 400, "unsupported_source")
    assert "vocabulary.txt" in refused.value.message


# -- TensorFlow Serving / KServe v1 ---------------------------------------------------------------


def test_predict_answers_in_tensorflow_servings_shape(
    registered: dict[str, BuiltModel], shared_server: RunningServer, sdk: Client
) -> None:
    url = f"{shared_server.url}/v1/models/keras-lstm"
    expected = registered["keras-lstm"].expected
    rows = authed.post(f"{url}:predict", json={"instances": TEXTS})
    assert rows.status_code == 200, rows.text
    assert rows.headers["openmaas-model-version"] == "keras-lstm:1"
    assert rows.json()["labels"] == ["negative", "positive"]
    np.testing.assert_allclose(rows.json()["predictions"], expected, atol=1e-5)
    # Columnar inputs naming the one input, TF Serving's b64 strings, a version in the path.
    encoded = [{"b64": base64.b64encode(text.encode()).decode()} for text in TEXTS[:2]]
    columns = authed.post(
        f"{url}/versions/1:predict",
        json={"signature_name": "serving_default", "inputs": {"text": encoded}},
    )
    assert columns.status_code == 200, columns.text
    np.testing.assert_allclose(columns.json()["outputs"], expected[:2], atol=1e-5)
    # Metered as /v1/classify is: one usage record per request, with its items.
    report = wait_for(
        "the predict requests' usage",
        lambda: (
            (r := sdk.usage(model="keras-lstm", group_by=["route"])).data
            and sum(g.items for g in r.data if g.route and g.route.endswith(":predict")) >= 8
            and r
        ),
        timeout_s=30,
    )
    # Grouped by the route's template, not by each model's path.
    assert "/v1/models/{target:path}:predict" in {g.route for g in report.data}


def test_predict_refuses_bad_instances_naming_the_index(
    registered: dict[str, BuiltModel], shared_server: RunningServer, sdk: Client
) -> None:
    url = f"{shared_server.url}/v1/models/keras-conv:predict"
    cases = [
        ({"instances": ["fine", 3]}, "instances[1] is a number"),
        ({"instances": ["fine", {"b64": "%%%"}]}, "instances[1]: b64 is not base64"),
        ({"inputs": ["fine", "  "]}, "inputs[1] is empty"),
        ({"instances": []}, "instances is empty"),
        ({"instances": ["x"], "inputs": ["x"]}, "either"),
        ({"instances": ["x"], "signature_name": "predict_probs"}, "serving_default"),
    ]
    for body, message in cases:
        response = authed.post(url, json=body)
        assert response.status_code == 400, (body, response.text)
        assert message in response.json()["error"]["message"], response.text
    # A model whose task :predict does not serve, an unknown model, a bad version.
    assert (
        authed.post(
            f"{shared_server.url}/v1/models/nope:predict", json={"instances": ["x"]}
        ).status_code
        == 404
    )
    bad_version = authed.post(
        f"{shared_server.url}/v1/models/keras-conv/versions/x:predict", json={"instances": ["x"]}
    )
    assert bad_version.status_code == 400
    # The scopes of /v1/classify: a key that may only read models may not predict.
    reader = sdk.create_key("keras-reader", scopes=["models:read"]).key
    refused = httpx.post(
        url, json={"instances": ["fine"]}, headers={"Authorization": f"Bearer {reader}"}
    )
    assert refused.status_code == 403, refused.text


def test_model_status_in_each_protocols_shape(
    registered: dict[str, BuiltModel], shared_server: RunningServer
) -> None:
    url = f"{shared_server.url}/v1/models/keras-gru"
    available = {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert authed.get(f"{url}/versions/1").json() == available
    assert authed.get(f"{url}/labels/latest").json() == available
    assert authed.get(url, params={"protocol": "tfserving"}).json() == available
    assert authed.get(url, params={"protocol": "kserve"}).json() == {
        "name": "keras-gru",
        "ready": True,
    }
    # Without a protocol it is OpenAI's model card, as before.
    card = authed.get(url).json()
    assert (card["object"], card["id"], card["task"]) == (
        "model",
        "keras-gru",
        "text-classification",
    )
    assert authed.get(f"{url}/versions/9").status_code == 404
    # TF Serving's metadata: one string in, the class scores out.
    metadata = authed.get(f"{url}/metadata")
    assert metadata.status_code == 200, metadata.text
    assert metadata.json()["model_spec"] == {
        "name": "keras-gru",
        "signature_name": "",
        "version": "1",
    }
    signature = metadata.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["text"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in signature["inputs"]["text"]["tensor_shape"]["dim"]] == ["-1"]
    assert signature["outputs"]["scores"]["dtype"] == "DT_FLOAT"


# -- docs/keras.md --------------------------------------------------------------------------------


def _json_documents(text: str) -> list[Any]:
    """The JSON objects in a console's output, in order (curl -s ends none with a newline)."""
    decoder, found, at = json.JSONDecoder(), [], text.find("{")
    while at != -1:
        try:
            document, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at = text.find("{", at + 1)
            continue
        found.append(document)
        at = text.find("{", end)
    return found


def test_the_docs_examples_run_as_written(shared_server: RunningServer, tmp_path: Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    # The text classifier's blocks come first (the image ones: test_keras_image_models.py).
    build = blocks(text, "python")[0]
    console = blocks(text, "console")[0]
    built = subprocess.run(
        [sys.executable, "-c", build],
        cwd=tmp_path,
        env=cli_env(shared_server),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    ran = run_script(shared_server, console, tmp_path)
    assert ran.returncode == 0, f"{console}\n---\n{ran.stdout}\n{ran.stderr}"
    classified, predicted, status = _json_documents(ran.stdout)[-3:]
    assert classified["data"][0]["label"] == "positive"
    assert predicted["labels"] == ["negative", "positive"]
    assert [int(np.argmax(p)) for p in predicted["predictions"]] == [1, 0]
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
