"""Datasets of images uploaded to a real server: a Fashion-MNIST slice (Debian's
`dataset-fashion-mnist`) as a .zip and a .tar.gz of class folders and as JSON Lines of data
URLs reads to the same examples, with per-class counts and image sizes; bad files are named
(truncated, not an image, a decompression bomb, outside any class folder, a class too small),
and archive paths that escape are refused as model archives' are."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from benchmarks import fashion_mnist

from tests.drawn_images import circle, claimed_png, encoded
from tests.integration.authed import AUTH, TIMEOUT_S
from tests.integration.conftest import RunningServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not fashion_mnist.available(), reason="apt-get install dataset-fashion-mnist"
    ),
]

PER_CLASS = 4


def upload(server: RunningServer, path: Path) -> httpx.Response:
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
    shared_server: RunningServer, fashion_slice: tuple[Any, Any], tmp_path: Path
) -> None:
    images, labels = fashion_slice
    answers = []
    for name in ("fashion.zip", "fashion.tar.gz"):
        path = fashion_mnist.write_class_folders(tmp_path / name, images, labels)
        answers.append(upload(shared_server, path))
    path = fashion_mnist.write_jsonl(tmp_path / "fashion.jsonl", images, labels)
    answers.append(upload(shared_server, path))
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
        f"{shared_server.url}/v1/datasets/{bodies[0]['id']}/split", headers=AUTH, timeout=TIMEOUT_S
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


def test_bad_images_are_named_by_file(shared_server: RunningServer, tmp_path: Path) -> None:
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
    answer = upload(shared_server, path)
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


def test_archive_paths_that_escape_are_refused(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    path = tmp_path / "escape.zip"
    path.write_bytes(_zip({"red/a.png": encoded(circle(16)), "../evil.png": encoded(circle(16))}))
    answer = upload(shared_server, path)
    assert answer.status_code == 400, answer.text
    assert "'..' escapes the archive" in answer.json()["error"]["message"]
