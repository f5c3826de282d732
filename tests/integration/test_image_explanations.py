"""`/v1/explain` with images against a real server with one job worker: a `cnn` trained here
through the training API on drawn pictures whose class is where a white square is (top-left
or bottom-right), so the region that explains it must hold the square; a tiny random ViT
served by the transformers runtime, whose region scores are checked against `/v1/classify`
of the occluded image and, for integrated gradients, of a black one. Both methods, the SDK
and the CLI, docs/explanations.md's image section, and the bad requests named by field.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from openmaas import Client
from openmaas.protocol.explanations import ExplainResponse, RegionOut
from tests.drawn_images import claimed_png, encoded, image_part, solid
from tests.drawn_shapes import Box, corner_squares, jsonl, overlaps, square_at
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import blocks, cli_env, run_cli, run_script, start_job_server
from tests.runtimes.tiny_vision import build_vit

pytestmark = pytest.mark.integration

MAX_REGIONS = 64  # the server's OPENMAAS_EXPLAIN_MAX_REGIONS here
TINY_CNN = {
    "n_epochs": 12,
    "filters": [8, 16],
    "convs_per_block": 1,  # the recipe's default is 2 (VGG-style); one is enough here
    "dense_units": 32,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "augment": False,
    "flip": False,
    "patience": 12,
}
VIT_LABELS = ["cat", "dog", "bird"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "explanations.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(
        tmp_path_factory,
        "image-explanations",
        {"OPENMAAS_EXPLAIN_MAX_REGIONS": str(MAX_REGIONS), "OPENMAAS_EXPLAIN_IMAGE_GRID": "4"},
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def shapes(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cnn trained by the worker on 2 x 48 drawn pictures, registered as `shapes`."""
    data = tmp_path_factory.mktemp("shapes-data") / "squares.jsonl"
    data.write_bytes(jsonl(corner_squares(48, seed=0)))
    dataset = sdk.upload_dataset(data)
    assert dataset.status == "processed", dataset.status_details
    job = sdk.create_training_job(
        "cnn", dataset.id, hyperparameters=TINY_CNN, model_name="shapes", seed=0
    )
    done = sdk.wait_for_training_job(job.id, poll_s=0.2, timeout_s=240)
    assert done.status == "succeeded", done.error
    return "shapes"


@pytest.fixture(scope="module")
def vit(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = build_vit(tmp_path_factory.mktemp("vit") / "vit", VIT_LABELS)
    registered = httpx.post(
        f"{server.url}/v1/registry/models/tiny-vit/versions",
        headers=server.headers,
        json={"source": {"type": "path", "path": str(directory)}},
        timeout=60,
    )
    assert registered.status_code == 201, registered.text
    return "tiny-vit"


def explain(server: RunningServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/explain", headers=server.headers, json=body, timeout=120)


def explained(server: RunningServer, body: dict[str, Any]) -> ExplainResponse:
    answer = explain(server, body)
    assert answer.status_code == 200, answer.text
    result = ExplainResponse.model_validate(answer.json())
    assert result.regions is not None
    assert result.grid is not None
    assert result.image is not None
    # The regions tile the image as sent, row by row.
    assert len(result.regions) == result.grid.rows * result.grid.cols
    assert sum(r.width * r.height for r in result.regions) == (
        result.image.width * result.image.height
    )
    assert [(r.row, r.col) for r in result.regions] == [
        (row, col) for row in range(result.grid.rows) for col in range(result.grid.cols)
    ]
    return result


def box(region: RegionOut) -> Box:
    return region.x, region.y, region.width, region.height


def top(result: ExplainResponse) -> RegionOut:
    return max(result.regions or [], key=lambda r: r.score)


def classify(server: RunningServer, model: str, image: Image.Image) -> dict[str, float]:
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": model, "input": image_part(encoded(image))},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return {s["label"]: s["score"] for s in answer.json()["data"][0]["labels"]}


# -- a cnn trained here: the square explains the class ----------------------------------------


@pytest.mark.parametrize("method", ["integrated-gradients", "occlusion"])
def test_the_trained_cnn_is_explained_by_the_square(
    server: RunningServer, shapes: str, method: str
) -> None:
    image, square = square_at(32, 32, x=3, y=2, side=9, seed=7)
    served = classify(server, shapes, image)
    result = explained(
        server, {"model": shapes, "input": image_part(encoded(image)), "method": method}
    )
    assert result.method == method
    assert result.target.label == "top-left" == max(served, key=lambda k: served[k])
    assert result.target.score == pytest.approx(served["top-left"], abs=1e-5)
    assert (result.grid and (result.grid.rows, result.grid.cols)) == (4, 4)  # the server's default
    assert overlaps(box(top(result)), square), (top(result), square)
    assert top(result).score > 0

    # Toward the other label the square weighs most against it.
    against = explained(
        server,
        {
            "model": shapes,
            "input": image_part(encoded(image)),
            "method": method,
            "target": "bottom-right",
        },
    )
    assert against.target.score == pytest.approx(served["bottom-right"], abs=1e-5)
    lowest = min(against.regions or [], key=lambda r: r.score)
    assert overlaps(box(lowest), square), (lowest, square)


def test_regions_are_in_the_pixels_of_the_image_as_sent(server: RunningServer, shapes: str) -> None:
    """A 96 x 64 picture (the model reads 32 x 32): boxes and the top region in its pixels."""
    image, square = square_at(96, 64, x=6, y=4, side=22, seed=8)
    for method in ("integrated-gradients", "occlusion"):
        result = explained(
            server,
            {
                "model": shapes,
                "input": image_part(encoded(image)),
                "method": method,
                "grid": {"rows": 4, "cols": 6},
            },
        )
        assert result.image is not None
        assert (result.image.width, result.image.height) == (96, 64)
        assert {(r.width, r.height) for r in result.regions or []} == {(16, 16)}
        assert result.target.label == "top-left"
        assert overlaps(box(top(result)), square), (method, top(result))


# -- a transformers image classifier: the scores are what they claim ----------------------------


def test_a_vit_is_explained_by_occlusion_as_classify_scores_it(
    server: RunningServer, vit: str
) -> None:
    image = square_at(40, 30, x=20, y=10, side=8, seed=3)[0].convert("RGB")
    full = classify(server, vit, image)
    result = explained(
        server,
        {
            "model": vit,
            "input": image_part(encoded(image)),
            "method": "occlusion",
            "grid": {"rows": 3, "cols": 4},
            "target": "dog",
        },
    )
    assert result.target.label == "dog"
    assert result.target.score == pytest.approx(full["dog"], abs=1e-5)
    assert result.passes == 13
    region = (result.regions or [])[6]  # row 1, col 2: x 20..30, y 10..20
    assert box(region) == (20, 10, 10, 10)
    blacked = image.copy()
    blacked.paste((0, 0, 0), (20, 10, 30, 20))
    assert region.score == pytest.approx(
        full["dog"] - classify(server, vit, blacked)["dog"], abs=1e-5
    )


def test_a_vit_is_explained_by_integrated_gradients(server: RunningServer, vit: str) -> None:
    image = square_at(40, 30, x=20, y=10, side=8, seed=3)[0].convert("RGB")
    full = classify(server, vit, image)
    label = max(full, key=lambda k: full[k])
    result = explained(server, {"model": vit, "input": image_part(encoded(image)), "heatmap": True})
    assert result.method == "integrated-gradients"
    assert result.target.label == label
    assert result.delta is not None
    assert result.delta < 0.05
    # The region scores add up to the probability's rise from a black image, within delta.
    black = classify(server, vit, Image.new("RGB", (40, 30)))[label]
    total = sum(r.score for r in result.regions or [])
    assert total == pytest.approx(full[label] - black, abs=result.delta + 1e-4)
    assert result.heatmap is not None
    with Image.open(io.BytesIO(base64.b64decode(result.heatmap.split(",", 1)[1]))) as drawn:
        assert (drawn.format, drawn.size, drawn.mode) == ("PNG", (40, 30), "RGBA")
    # A grey image is read as RGB by the model, as /v1/classify reads it.
    grey = explained(server, {"model": vit, "input": image_part(encoded(solid(16, 16)))})
    assert (grey.grid and (grey.grid.rows, grey.grid.cols)) == (4, 4)


# -- the SDK and the CLI ------------------------------------------------------------------------


def test_the_sdk_and_the_cli_take_an_image_file(
    server: RunningServer, sdk: Client, shapes: str, tmp_path: Path
) -> None:
    image, square = square_at(32, 32, x=20, y=21, side=9, seed=9)
    path = tmp_path / "square.png"
    image.save(path)
    answer = sdk.explain(shapes, image=path, grid=(2, 2), method="occlusion")
    assert answer.target.label == "bottom-right"
    assert (top(answer).row, top(answer).col) == (1, 1)

    heat = tmp_path / "heat.png"
    table = run_cli(
        server, "explain", shapes, "--image", str(path), "--grid", "2x2", "--heatmap", str(heat)
    )
    assert table.returncode == 0, table.stderr
    assert "bottom-right" in table.stdout
    assert "integrated-gradients" in table.stdout
    with Image.open(heat) as drawn:
        assert drawn.size == (32, 32)
    raw = run_cli(server, "explain", shapes, "--image", str(path), "--json")
    assert raw.returncode == 0, raw.stderr
    parsed = json.loads(raw.stdout)
    best = max(parsed["regions"], key=lambda r: r["score"])
    assert overlaps((best["x"], best["y"], best["width"], best["height"]), square)


# -- docs/explanations.md, the image section, run as written -----------------------------------


def test_the_docs_image_examples_run_as_written(
    server: RunningServer, shapes: str, tmp_path: Path
) -> None:
    square_at(32, 32, x=1, y=1, side=6, seed=0)[0].save(tmp_path / "square.png")
    text = DOCS.read_text(encoding="utf-8")
    shell = blocks(text, "bash")[1]
    ran = run_script(server, shell, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "top-left" in ran.stdout
    assert ran.stdout.splitlines()[-1] == "occlusion top-left 0 0 8 8"
    with Image.open(tmp_path / "heat.png") as drawn:
        assert drawn.size == (32, 32)
    script, printed = blocks(text, "python")[1], blocks(text, "text")[1]
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=cli_env(server),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == printed


# -- bad requests: 400 naming the field -------------------------------------------------------


SMALL = image_part(encoded(solid(16, 12)))


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"grid": {"rows": 9, "cols": 8}}, "grid", "OPENMAAS_EXPLAIN_MAX_REGIONS"),
        ({"grid": {"rows": 13, "cols": 2}}, "grid", "rows from 1 to 12"),
        ({"grid": {"rows": 0, "cols": 2}}, "grid.rows", "greater than or equal to 1"),
        ({"target": "circle"}, "target", "use one of bottom-right, top-left"),
        ({"method": "lime"}, "method", "'integrated-gradients' or 'occlusion'"),
        ({"span": {"start": 0, "end": 2}}, "span", "leave span out"),
        ({"input": {"type": "image_url"}}, "input", "image_url"),
        ({"input": image_part(b"not an image at all")}, "input", "not an image"),
        ({"input": image_part(claimed_png(50_000, 50_000))}, "input", "decompression bomb"),
        (
            {"input": {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}},
            "input",
            "not a data URL",
        ),
        ({"input": "a text", "grid": {"rows": 2, "cols": 2}}, "grid", "grid is for images"),
        ({"input": "a text"}, "model", "/v1/explain with a text needs"),
    ],
)
def test_bad_requests_name_the_field(
    server: RunningServer, shapes: str, body: dict[str, Any], param: str, words: str
) -> None:
    answer = explain(server, {"model": shapes, "input": SMALL, **body})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param, error
    assert words in error["message"], error


def test_an_image_for_a_text_model_names_the_model(server: RunningServer, sdk: Client) -> None:
    sdk.register_catalog_entry("vader")
    answer = explain(server, {"model": "vader", "input": SMALL})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "model"
    assert "needs an image-classification model" in error["message"]
