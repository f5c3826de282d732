"""Datasets of images and the image recipes on a real server with a worker.

Datasets: a Fashion-MNIST slice (Debian's `dataset-fashion-mnist`) as a .zip and a .tar.gz of
class folders and as JSON Lines of data URLs reads to the same examples, with per-class
counts and image sizes; bad files are named (truncated, not an image, a decompression bomb,
outside any class folder, a class too small), and archive paths that escape are refused as
model archives' are.

Recipes: docs/images.md's commands run as written (`openmaas train cnn` on a .zip, the model
on /v1/classify with curl, as a content part and over v2); `resnet` trains from scratch and
is then fine-tuned from that registered ResNet on three of the classes; the models answer on
/v1/classify (an uploaded file) and over v2 (UINT8 pixels, the official Triton client)."""

from __future__ import annotations

import io
import json
import re
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
from benchmarks import fashion_mnist

from openmaas import Client
from tests.drawn_images import circle, claimed_png, encoded
from tests.integration.authed import AUTH, TIMEOUT_S
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import cli_env, start_job_server
from tests.integration.test_v2_protocol import BearerAuth

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not fashion_mnist.available(), reason="apt-get install dataset-fashion-mnist"
    ),
]

JOB_TIMEOUT_S = 300
DOCS = Path(__file__).resolve().parents[2] / "docs" / "images.md"
PER_CLASS = 4


@pytest.fixture(scope="module")
def job_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(tmp_path_factory, "image-jobs")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(job_server: RunningServer) -> Iterator[Client]:
    with Client(job_server.url, api_key=job_server.key) as client:
        yield client


@pytest.fixture(scope="module")
def fashion() -> tuple[Any, Any]:
    images, labels = fashion_mnist.read_split("train")
    return fashion_mnist.balanced_slice(images, labels, 8)


def upload(sdk: Client, path: Path, images: Any, labels: Any) -> str:
    fashion_mnist.write_class_folders(path, images, labels)
    dataset = sdk.upload_dataset(path)
    assert dataset.status == "processed", dataset.status_details
    return dataset.id


def train(sdk: Client, recipe: str, file_id: str, name: str, **options: Any) -> Any:
    job = sdk.create_training_job(recipe, file_id, model_name=name, seed=3, **options)
    done = sdk.wait_for_training_job(job.id, poll_s=0.3, timeout_s=JOB_TIMEOUT_S)
    assert done.status == "succeeded", done.error
    assert done.task == "image-classification"
    assert 0.0 <= done.metrics["accuracy"] <= 1.0
    return done


def classify_upload(server: RunningServer, model: str, image: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=AUTH,
        data={"model": model},
        files=[("file", ("item.png", fashion_mnist.png(image), "image/png"))],
        timeout=TIMEOUT_S,
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["data"][0]
    return result


def test_the_docs_examples_run_as_written(
    job_server: RunningServer, fashion: tuple[Any, Any], tmp_path: Path
) -> None:
    """docs/images.md: `openmaas train cnn` on a zip of class folders, then the model on
    /v1/classify (curl, multipart), as a content part and over v2 (the Python example)."""
    images, labels = fashion
    fashion_mnist.write_class_folders(tmp_path / "fashion.zip", images, labels)
    sneaker = images[labels == 7][0]
    (tmp_path / "sneaker.png").write_bytes(fashion_mnist.png(sneaker))
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Training and serving") :]
    blocks = dict(re.findall(r"```(bash|python)\n(.*?)```", section, re.DOTALL))
    env = {**cli_env(job_server), "COLUMNS": "200"}
    train_command, curl_command = blocks["bash"].strip().splitlines()
    for command in (train_command, curl_command):
        ran = subprocess.run(
            command,
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
            check=False,
        )
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
    answer = json.loads(ran.stdout)
    names = {fashion_mnist.folder_name(c) for c in range(10)}
    assert answer["model"] == "fashion-cnn"
    assert len(answer["data"][0]["labels"]) == 3
    assert answer["data"][0]["label"] in names
    ran = subprocess.run(
        [sys.executable, "-c", blocks["python"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    by_part, by_v2 = ran.stdout.splitlines()  # a label may hold a space ("Ankle boot")
    assert by_part == by_v2 == answer["data"][0]["label"]
    version = httpx.get(
        f"{job_server.url}/v1/registry/models/fashion-cnn/versions/1",
        headers=AUTH,
        timeout=TIMEOUT_S,
    ).json()
    assert version["task"] == "image-classification"
    assert version["params"]["hyperparameters"]["filters"] == [32, 64]


def test_resnet_trains_and_fine_tunes_a_registered_resnet(
    job_server: RunningServer, sdk: Client, fashion: tuple[Any, Any], tmp_path: Path
) -> None:
    images, labels = fashion
    file_id = upload(sdk, tmp_path / "fashion.zip", images, labels)
    small = {"n_epochs": 1, "image_size": [16, 16], "batch_size": 16}
    train(sdk, "resnet", file_id, "fashion-resnet", hyperparameters=small)
    three = np.isin(labels, [5, 7, 9])  # sandals, sneakers, ankle boots
    shoes = upload(sdk, tmp_path / "shoes.tar.gz", images[three], labels[three])
    tuned = train(
        sdk,
        "resnet",
        shoes,
        "fashion-shoes",
        base_model="fashion-resnet",
        hyperparameters={"n_epochs": 1, "batch_size": 8},
    )
    assert tuned.base_model == "fashion-resnet"

    client = triton.InferenceServerClient(url=job_server.url.removeprefix("http://"))
    client.register_plugin(BearerAuth(job_server.key))
    try:
        pixels = images[three][:2, :, :, None]  # N x 28 x 28 x 1, uint8
        tensor = triton.InferInput("IMAGE", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        result = client.infer("fashion-shoes", [tensor])
    finally:
        client.close()
    assert result.as_numpy("SCORES").shape == (2, 3)
    shoe_names = {fashion_mnist.folder_name(c) for c in (5, 7, 9)}
    assert {v.decode() for v in result.as_numpy("LABEL")} <= shoe_names
    served = classify_upload(job_server, "fashion-shoes", images[three][0])
    assert {item["label"] for item in served["labels"]} == shoe_names


def post_dataset(server: RunningServer, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return httpx.post(
            f"{server.url}/v1/datasets",
            headers=AUTH,
            files={"file": (path.name, handle, "application/octet-stream")},
            timeout=TIMEOUT_S,
        )


@pytest.fixture(scope="module")
def fashion_slice() -> tuple[Any, Any]:
    images, labels = fashion_mnist.read_split("test")
    return fashion_mnist.balanced_slice(images, labels, PER_CLASS)


def test_class_folders_and_jsonl_read_alike(
    job_server: RunningServer, fashion_slice: tuple[Any, Any], tmp_path: Path
) -> None:
    images, labels = fashion_slice
    answers = []
    for name in ("fashion.zip", "fashion.tar.gz"):
        path = fashion_mnist.write_class_folders(tmp_path / name, images, labels)
        answers.append(post_dataset(job_server, path))
    path = fashion_mnist.write_jsonl(tmp_path / "fashion.jsonl", images, labels)
    answers.append(post_dataset(job_server, path))
    bodies = [answer.json() for answer in answers]
    for answer, body in zip(answers, bodies, strict=True):
        assert answer.status_code == 201, answer.text
        assert body["status"] == "processed", body["status_details"]
        assert body["task"] == "image-classification"
        stats = body["stats"]
        assert stats["rows"] == 10 * PER_CLASS
        expected = {fashion_mnist.folder_name(c): PER_CLASS for c in range(10)}
        assert stats["labels"] == expected
        assert stats["images"]["widths"]["max"] == stats["images"]["heights"]["min"] == 28
        assert stats["images"]["channels"] == {"1": 10 * PER_CLASS}
        assert stats["images"]["formats"] == {"PNG": 10 * PER_CLASS}
        warned = {p["code"] for p in body["report"]["problems"]}
        assert "few_images" in warned  # 4 a class: a warning, not an error
    assert [b["schema"]["format"] for b in bodies] == ["image-folders", "image-folders", "jsonl"]
    assert len({b["content_sha256"] for b in bodies}) == 1  # the same examples

    split = httpx.get(
        f"{job_server.url}/v1/datasets/{bodies[0]['id']}/split", headers=AUTH, timeout=TIMEOUT_S
    )
    assert split.status_code == 200, split.text
    parts = split.json()
    sizes = [parts[name]["rows"] for name in ("train", "validation", "test")]
    assert sum(sizes) == 10 * PER_CLASS
    assert min(sizes) > 0


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_bad_images_are_named_by_file(job_server: RunningServer, tmp_path: Path) -> None:
    good = {
        f"{cls}/{i}.png": encoded(circle(16 + i, colour))
        for i in range(3)
        for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255)))
    }
    bad = {
        "red/cut.png": encoded(circle(32))[:100],
        "blue/notes.txt": b"not an image",
        "blue/bomb.png": claimed_png(40_000, 40_000),
        "blue/tiny.png": encoded(circle(4)),
        "green/only.png": encoded(circle(20)),
        "loose.png": encoded(circle(20)),
    }
    path = tmp_path / "bad.zip"
    path.write_bytes(_zip({**good, **bad}))
    answer = post_dataset(job_server, path)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "error"
    problems = {(p["code"], p["column"]): p["problem"] for p in body["report"]["problems"]}
    assert "truncated or corrupt" in problems[("unreadable_image", "red/cut.png")]
    assert "not an image this server decodes" in problems[("unreadable_image", "blue/notes.txt")]
    assert "decompression bomb" in problems[("unreadable_image", "blue/bomb.png")]
    assert "4 x 4 pixels" in problems[("image_too_small", "blue/tiny.png")]
    assert "not inside a class folder" in problems[("not_in_class_folder", "loose.png")]
    assert problems[("too_few_images", "label")] == "class 'green' has 1 image"
    assert body["stats"]["labels"] == {"blue": 3, "red": 3, "green": 1}


def test_archive_paths_that_escape_are_refused(job_server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "escape.zip"
    path.write_bytes(_zip({"red/a.png": encoded(circle(16)), "../evil.png": encoded(circle(16))}))
    answer = post_dataset(job_server, path)
    assert answer.status_code == 400, answer.text
    assert "'..' escapes the archive" in answer.json()["error"]["message"]
