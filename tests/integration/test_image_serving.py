"""Image classification served by a real server: a Hugging Face ViT directory (tiny, random
weights, saved by the test) on `/v1/classify` (content parts with data URLs, multipart
uploads) and on v2 through the official Triton client (UINT8 and FP32 pixels, encoded
files as BYTES); every form of the same image scores alike. Bad images are 400s that name
the input and the reason: undecodable, truncated, too large, a decompression bomb (refused
from its header), a URL the server would have to fetch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from tests.drawn_images import (
    circle,
    claimed_png,
    data_url,
    encoded,
    image_part,
    noise_png,
    solid,
    stripes,
)
from tests.integration.authed import AUTH, TIMEOUT_S
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.integration.test_v2_protocol import BearerAuth
from tests.runtimes.tiny_vision import build_vit

pytestmark = pytest.mark.integration

MODEL = "tiny-vit"
LABELS = ["cat", "dog", "bird"]
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("images")
    running = start_server(
        root / "home",
        {"OPENMAAS_MAX_IMAGE_MB": "1", "OPENMAAS_MAX_IMAGE_PIXELS": str(MAX_PIXELS)},
    )
    directory = build_vit(root / "vit", LABELS)
    response = httpx.post(
        f"{running.url}/v1/registry/models/{MODEL}/versions",
        headers=AUTH,
        json={"source": {"type": "path", "path": str(directory)}},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 201, response.text
    assert response.json()["task"] == "image-classification"
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(image_server: RunningServer) -> Iterator[Any]:
    connection = triton.InferenceServerClient(url=image_server.url.removeprefix("http://"))
    connection.register_plugin(BearerAuth(image_server.key))
    yield connection
    connection.close()


def classify(server: RunningServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/classify", headers=AUTH, json=body, timeout=TIMEOUT_S)


def scores(entry: dict[str, Any]) -> list[float]:
    by_label = {item["label"]: item["score"] for item in entry["labels"]}
    return [by_label[label] for label in LABELS]


RED = circle(40, (255, 0, 0))
GREY = circle(24, (200, 200, 200), mode="L")


def test_content_parts_are_classified(image_server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "input": [image_part(encoded(RED)), image_part(encoded(GREY, "JPEG"), "image/jpeg")],
    }
    response = classify(image_server, body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert [entry["index"] for entry in payload["data"]] == [0, 1]
    for entry in payload["data"]:
        assert entry["label"] == entry["labels"][0]["label"]
        assert sorted(item["label"] for item in entry["labels"]) == sorted(LABELS)
        assert sum(scores(entry)) == pytest.approx(1.0, abs=1e-5)
    assert payload["usage"]["prompt_tokens"] == 0
    # One part alone, not in a list; top_k cuts the labels.
    single = classify(image_server, {"model": MODEL, "input": image_part(encoded(RED)), "top_k": 1})
    assert single.status_code == 200, single.text
    assert len(single.json()["data"][0]["labels"]) == 1
    assert scores(payload["data"][0])[LABELS.index(single.json()["data"][0]["label"])] == max(
        scores(payload["data"][0])
    )


def test_multipart_uploads_score_as_content_parts(image_server: RunningServer) -> None:
    red, stripe = encoded(RED), encoded(stripes(50, 30))
    response = httpx.post(
        f"{image_server.url}/v1/classify",
        headers=AUTH,
        data={"model": MODEL, "top_k": "3"},
        files=[("file", ("red.png", red, "image/png")), ("file", ("s.png", stripe, "image/png"))],
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    uploaded = response.json()["data"]
    parts = classify(image_server, {"model": MODEL, "input": [image_part(red), image_part(stripe)]})
    for upload, part in zip(uploaded, parts.json()["data"], strict=True):
        assert scores(upload) == pytest.approx(scores(part), abs=1e-6)


def test_v2_pixels_and_files_score_alike(image_server: RunningServer, client: Any) -> None:
    pixels = np.stack([np.asarray(RED), np.asarray(circle(40, (0, 90, 255)))])  # uint8 N,H,W,3
    as_uint8 = triton.InferInput("IMAGE", list(pixels.shape), "UINT8")
    as_uint8.set_data_from_numpy(pixels)
    by_pixels = client.infer(MODEL, [as_uint8]).as_numpy("SCORES")
    assert by_pixels.shape == (2, len(LABELS))

    as_float = triton.InferInput("IMAGE", list(pixels.shape), "FP32")
    as_float.set_data_from_numpy(pixels.astype(np.float32) / 255.0, binary_data=False)
    np.testing.assert_allclose(
        client.infer(MODEL, [as_float]).as_numpy("SCORES"), by_pixels, atol=1e-5
    )

    files = np.array([encoded(RED), encoded(circle(40, (0, 90, 255)))], dtype=object)
    as_bytes = triton.InferInput("IMAGE", [2], "BYTES")
    as_bytes.set_data_from_numpy(files)
    result = client.infer(MODEL, [as_bytes])
    np.testing.assert_allclose(result.as_numpy("SCORES"), by_pixels, atol=1e-5)
    labels = [v.decode() for v in result.as_numpy("LABEL")]
    assert labels == [LABELS[i] for i in by_pixels.argmax(axis=1)]

    parts = classify(image_server, {"model": MODEL, "input": [image_part(encoded(RED))]})
    assert scores(parts.json()["data"][0]) == pytest.approx(by_pixels[0].tolist(), abs=1e-5)


def test_v2_metadata_describes_the_image_tensor(client: Any) -> None:
    metadata = client.get_model_metadata(MODEL)
    assert metadata["inputs"] == [{"name": "IMAGE", "datatype": "UINT8", "shape": [-1, -1, -1, -1]}]
    assert {o["name"]: o["shape"] for o in metadata["outputs"]}["SCORES"] == [-1, len(LABELS)]
    assert metadata["parameters"]["task"] == "image-classification"


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (image_part(b"this is not an image"), "input[1]: not an image this server decodes"),
        (image_part(encoded(RED)[:120]), "input[1]: the image data is truncated or corrupt"),
        (image_part(noise_png(700)), "input[1]: the image file is 1.4 MiB; this server takes"),
        (image_part(encoded(solid(1200, 1000))), "1200 x 1000 = 1,200,000 pixels"),
        (image_part(claimed_png(50_000, 50_000)), "input[1]: refused as a decompression bomb"),
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            "input[1]: image_url.url is not a data URL (https)",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}},
            "input[1]: the data URL's payload is not valid base64",
        ),
        (
            {"type": "image_url", "image_url": {"url": data_url(b"abc", "text/plain")}},
            "input[1]: the data URL's media type is text/plain",
        ),
        ({"type": "image_url", "image_url": {}}, "input[1].image_url.url: Field required"),
    ],
    ids=[
        "undecodable",
        "truncated",
        "too-large",
        "too-many-pixels",
        "bomb",
        "url",
        "base64",
        "type",
        "no-url",
    ],
)
def test_bad_images_are_400s_naming_the_input(
    image_server: RunningServer, second: dict[str, Any], reason: str
) -> None:
    response = classify(image_server, {"model": MODEL, "input": [image_part(encoded(RED)), second]})
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]["message"]


def test_bad_tensors_and_uploads_are_400s(image_server: RunningServer, client: Any) -> None:
    out_of_range = triton.InferInput("IMAGE", [1, 8, 8, 3], "FP32")
    out_of_range.set_data_from_numpy(np.full((1, 8, 8, 3), 2.0, dtype=np.float32))
    with pytest.raises(
        InferenceServerException, match=r"input\[0\]: FP32 pixels must be finite and in \[0, 1\]"
    ):
        client.infer(MODEL, [out_of_range])
    two_channels = triton.InferInput("IMAGE", [1, 8, 8, 2], "UINT8")
    two_channels.set_data_from_numpy(np.zeros((1, 8, 8, 2), dtype=np.uint8))
    with pytest.raises(InferenceServerException, match=r"input\[0\]: pixels of shape \[8, 8, 2\]"):
        client.infer(MODEL, [two_channels])
    garbage = triton.InferInput("IMAGE", [1], "BYTES")
    garbage.set_data_from_numpy(np.array([b"GIF89a broken"], dtype=object))
    with pytest.raises(
        InferenceServerException,
        match=r"input\[0\]: the image header is corrupt|input\[0\]: not an image",
    ):
        client.infer(MODEL, [garbage])

    no_file = httpx.post(
        f"{image_server.url}/v1/classify",
        headers=AUTH,
        data={"model": MODEL},
        files=[("other", ("a", b"x"))],
        timeout=TIMEOUT_S,
    )
    assert no_file.status_code == 400
    assert "unknown form field 'other'" in no_file.json()["error"]["message"]
    text_to_image_model = classify(image_server, {"model": MODEL, "input": ["a text"]})
    assert text_to_image_model.status_code == 400
    assert "an image-classification model takes images" in text_to_image_model.text
