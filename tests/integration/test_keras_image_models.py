"""Keras 3 Conv2D image classifiers, trained and saved by the test (a grey one on a
Fashion-MNIST slice with a Rescaling layer, an RGB one on circles the test draws), uploaded to
a real server and served on every image-classification route: /v1/classify (content parts,
multipart uploads), v2 through tritonclient (UINT8, FP32, BYTES) and TF Serving's :predict
(nested pixel arrays in the model's input range, {"b64": ...} files); each answers what
Keras computes on the same pixels. Bad images, and models no image can be served to, are
4xx that name the problem."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton  # type: ignore[import-untyped]
from benchmarks import fashion_mnist
from PIL import Image
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from openmaas import APIError, Client
from tests.drawn_images import encoded, image_part
from tests.integration import authed
from tests.integration.conftest import RunningServer, assert_api_error
from tests.integration.job_servers import blocks, cli_env, run_script
from tests.integration.test_keras_models import DOCS, _json_documents
from tests.integration.test_v2_protocol import BearerAuth
from tests.runtimes.keras_image_models import (
    BuiltImageModel,
    drawn_rgb_cnn,
    fashion_cnn,
    four_channel_model,
    lambda_image_model,
)

# Keras's model.predict on torch: numpy's DeprecationWarning about __array__(copy=...).
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
ATOL = 1e-5


def _png(pixels: np.ndarray[Any, Any]) -> bytes:
    return encoded(Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels))


@pytest.fixture(scope="module")
def colours(
    tmp_path_factory: pytest.TempPathFactory, sdk: Client
) -> BuiltImageModel:  # labels.txt beside the file; pixels in [0, 1]
    built = drawn_rgb_cnn(tmp_path_factory.mktemp("keras-images") / "colours")
    version = sdk.upload("keras-colours", built.directory)
    assert (version.task, version.runtime) == ("image-classification", "keras")
    assert version.params == {
        "input_shape": [32, 32, 3],
        "pixel_max": 1.0,
        "labels": built.labels,  # from labels.txt
    }
    return built


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory, sdk: Client) -> BuiltImageModel:
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    built = fashion_cnn(tmp_path_factory.mktemp("keras-images") / "fashion")
    version = sdk.upload("keras-fashion", built.directory, params={"labels": built.labels})
    assert (version.task, version.runtime) == ("image-classification", "keras")
    # Read from config.json: the input, and raw pixels because the model rescales them.
    assert (version.params["input_shape"], version.params["pixel_max"]) == ([28, 28, 1], 255.0)
    return built


@pytest.fixture(scope="module")
def triton_client(shared_server: RunningServer) -> Iterator[Any]:
    connection = triton.InferenceServerClient(url=shared_server.url.removeprefix("http://"))
    connection.register_plugin(BearerAuth(shared_server.key))
    yield connection
    connection.close()


def _by_label(data: list[dict[str, Any]], labels: list[str]) -> np.ndarray[Any, Any]:
    rows = [{s["label"]: s["score"] for s in entry["labels"]} for entry in data]
    return np.array([[row[label] for label in labels] for row in rows])


@pytest.fixture(params=["keras-colours", "keras-fashion"])
def served(request: pytest.FixtureRequest) -> tuple[str, BuiltImageModel]:
    fixture = "colours" if request.param == "keras-colours" else "fashion"
    return request.param, request.getfixturevalue(fixture)


def test_classify_parts_and_uploads_answer_what_keras_computes(
    served: tuple[str, BuiltImageModel], shared_server: RunningServer
) -> None:
    name, built = served
    parts = [image_part(_png(p)) for p in built.pixels]
    response = authed.post(f"{shared_server.url}/v1/classify", json={"model": name, "input": parts})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    np.testing.assert_allclose(_by_label(data, built.labels), built.expected, atol=ATOL)
    assert [d["label"] for d in data] == [built.labels[i] for i in built.expected.argmax(1)]
    files = [("file", (f"{i}.png", _png(p), "image/png")) for i, p in enumerate(built.pixels[:2])]
    uploaded = httpx.post(
        f"{shared_server.url}/v1/classify",
        headers=authed.AUTH,
        data={"model": name},
        files=files,
        timeout=authed.TIMEOUT_S,
    )
    assert uploaded.status_code == 200, uploaded.text
    np.testing.assert_allclose(
        _by_label(uploaded.json()["data"], built.labels), built.expected[:2], atol=ATOL
    )


def test_v2_pixels_and_files_answer_what_keras_computes(
    served: tuple[str, BuiltImageModel], triton_client: Any
) -> None:
    name, built = served
    as_uint8 = triton.InferInput("IMAGE", list(built.pixels.shape), "UINT8")
    as_uint8.set_data_from_numpy(built.pixels)
    result = triton_client.infer(name, [as_uint8])
    np.testing.assert_allclose(result.as_numpy("SCORES"), built.expected, atol=ATOL)
    labels = [v.decode() for v in result.as_numpy("LABEL")]
    assert labels == [built.labels[i] for i in built.expected.argmax(1)]
    as_float = triton.InferInput("IMAGE", list(built.pixels.shape), "FP32")
    as_float.set_data_from_numpy(built.pixels.astype(np.float32) / 255)
    np.testing.assert_allclose(
        triton_client.infer(name, [as_float]).as_numpy("SCORES"), built.expected, atol=ATOL
    )
    files = np.array([_png(p) for p in built.pixels], dtype=object)
    as_bytes = triton.InferInput("IMAGE", [len(files)], "BYTES")
    as_bytes.set_data_from_numpy(files)
    np.testing.assert_allclose(
        triton_client.infer(name, [as_bytes]).as_numpy("SCORES"), built.expected, atol=ATOL
    )


def test_predict_takes_pixels_in_the_models_range_and_b64_files(
    fashion: BuiltImageModel, colours: BuiltImageModel, shared_server: RunningServer
) -> None:
    url = f"{shared_server.url}/v1/models"
    # The grey model rescales itself: raw 0-255 pixels, as model.predict takes them.
    raw = authed.post(f"{url}/keras-fashion:predict", json={"instances": fashion.pixels.tolist()})
    assert raw.status_code == 200, raw.text
    assert raw.json()["labels"] == fashion.labels
    np.testing.assert_allclose(raw.json()["predictions"], fashion.expected, atol=ATOL)
    # The RGB one was trained on pixels / 255: floats in [0, 1]; columnar, naming the input.
    scaled = (colours.pixels / 255.0).tolist()
    columns = authed.post(f"{url}/keras-colours/versions/1:predict", json={"inputs": {"x": scaled}})
    assert columns.status_code == 200, columns.text
    np.testing.assert_allclose(columns.json()["outputs"], colours.expected, atol=ATOL)
    # Encoded files; an RGB file of grey pixels becomes grey for the grey model (luma).
    rgb = [np.repeat(p, 3, axis=2) for p in fashion.pixels[:3]]
    b64 = [{"b64": base64.b64encode(_png(p)).decode()} for p in rgb]
    files = authed.post(f"{url}/keras-fashion:predict", json={"instances": b64})
    assert files.status_code == 200, files.text
    np.testing.assert_allclose(files.json()["predictions"], fashion.expected[:3], atol=ATOL)


def test_metadata_gives_the_signature_with_the_input_shape(
    fashion: BuiltImageModel, colours: BuiltImageModel, shared_server: RunningServer
) -> None:
    url = f"{shared_server.url}/v1/models"
    for path, name, shape in [
        ("keras-fashion/metadata", "keras-fashion", ["28", "28", "1"]),
        ("keras-colours/versions/1/metadata", "keras-colours", ["32", "32", "3"]),
    ]:
        response = authed.get(f"{url}/{path}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_spec"] == {"name": name, "signature_name": "", "version": "1"}
        signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["method_name"] == "tensorflow/serving/predict"
        [image] = signature["inputs"].values()
        assert image["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", *shape]
        [scores] = signature["outputs"].values()
        labels = fashion.labels if name == "keras-fashion" else colours.labels
        assert [d["size"] for d in scores["tensor_shape"]["dim"]] == ["-1", str(len(labels))]
    assert authed.get(f"{url}/keras-nope/metadata").status_code == 404


def test_bad_images_are_400s_naming_the_input(
    fashion: BuiltImageModel, colours: BuiltImageModel, shared_server: RunningServer
) -> None:
    url = f"{shared_server.url}/v1/models"
    good = fashion.pixels[0].tolist()
    junk = {"b64": base64.b64encode(b"not an image at all").decode()}
    two_channels = np.zeros((28, 28, 2), dtype=int).tolist()
    cases = [
        ("keras-fashion", [good, two_channels], "instances[1]: pixels of shape [28, 28, 2]"),
        ("keras-fashion", [good, junk], "input[1]: not an image this server decodes"),
        ("keras-fashion", [np.full((28, 28, 1), 300).tolist()], "must lie in [0, 255]"),
        ("keras-colours", [np.full((32, 32, 3), 2.0).tolist()], "must lie in [0, 1]"),
        ("keras-fashion", [[[1, 2], [3]]], "instances[0] is not an array of pixel values"),
        ("keras-fashion", ["a text"], "instances[0] is str; this model takes one image"),
        ("keras-fashion", [{"b64": "%%%"}], "instances[0]: b64 is not base64"),
    ]
    for name, instances, message in cases:
        response = authed.post(f"{url}/{name}:predict", json={"instances": instances})
        assert response.status_code == 400, (message, response.text)
        assert message in response.json()["error"]["message"], response.text
    undecodable = authed.post(
        f"{shared_server.url}/v1/classify",
        json={"model": "keras-colours", "input": [image_part(b"\x89PNG broken")]},
    )
    assert undecodable.status_code == 400
    assert "input[0]:" in undecodable.json()["error"]["message"]


def test_v2_pixels_of_unconvertible_channels_are_refused(
    colours: BuiltImageModel, triton_client: Any
) -> None:
    rgba = triton.InferInput("IMAGE", [1, 32, 32, 4], "UINT8")
    rgba.set_data_from_numpy(np.zeros((1, 32, 32, 4), dtype=np.uint8))
    with pytest.raises(
        InferenceServerException, match=r"input\[0\]: pixels of shape \[32, 32, 4\]"
    ):
        triton_client.infer("keras-colours", [rgba])


def test_models_no_image_is_served_to_are_refused_at_registration(
    tmp_path: Path, sdk: Client
) -> None:
    with pytest.raises(APIError) as lambda_refused:
        sdk.upload("keras-image-lambda", lambda_image_model(tmp_path / "lambda"))
    assert_api_error(lambda_refused, 400, "unsafe_artifact")
    assert "Lambda" in lambda_refused.value.message
    with pytest.raises(APIError) as rgba_refused:
        sdk.upload("keras-rgba", four_channel_model(tmp_path / "rgba"))
    assert_api_error(rgba_refused, 400, "unsupported_source")
    assert "rgba.keras takes 4 channels per pixel" in rgba_refused.value.message


def test_the_docs_image_example_runs_as_written(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    # keras.datasets.fashion_mnist.load_data() finds the dataset in KERAS_HOME's cache
    # (the same IDX files it would download), so the example runs as written, offline.
    cache = tmp_path / "keras-home" / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    for pair in fashion_mnist.FILES.values():
        for name in pair:
            (cache / name).symlink_to(fashion_mnist.DIRECTORY / name)
    text = DOCS.read_text(encoding="utf-8")
    build, console = blocks(text, "python")[1], blocks(text, "console")[1]
    env = {**cli_env(shared_server), "KERAS_HOME": str(tmp_path / "keras-home")}
    built = subprocess.run(
        [sys.executable, "-c", build],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert os.path.getsize(tmp_path / "fashion" / "fashion.keras") > 0
    ran = run_script(shared_server, console, tmp_path)
    assert ran.returncode == 0, f"{console}\n---\n{ran.stdout}\n{ran.stderr}"
    classified, pixels, encoded_file, metadata = _json_documents(ran.stdout)[-4:]
    assert classified["data"][0]["label"] == "Ankle boot"
    assert pixels["labels"][-1] == "Ankle boot"
    assert [int(np.argmax(p)) for p in pixels["predictions"]] == [9, 2]  # boot, pullover
    np.testing.assert_allclose(encoded_file["predictions"][0], pixels["predictions"][0], atol=ATOL)
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    [image] = signature["inputs"].values()
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
