"""Fashion-MNIST (Xiao et al. 2017) from the Debian package `dataset-fashion-mnist`: 60,000
training and 10,000 test images, 28 x 28 grey, 10 classes, in the IDX files the package
installs (`dpkg -L dataset-fashion-mnist`). Read into arrays, and written as the dataset
files OpenMaaS takes: a `.zip` or `.tar.gz` of one folder per class, or JSON Lines.

Example::

    images, labels = read_split("train")  # uint8 (60000, 28, 28), int64 (60000,)
    write_class_folders(tmp / "slice.zip", images[:200], labels[:200])
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

DIRECTORY = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The dataset's label names, in label order (github.com/zalandoresearch/fashion-mnist).
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def available() -> bool:
    return all((DIRECTORY / name).is_file() for pair in FILES.values() for name in pair)


def _idx(path: Path) -> npt.NDArray[Any]:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    zero, kind, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:  # unsigned bytes
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def read_split(split: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    images_file, labels_file = FILES[split]
    images = _idx(DIRECTORY / images_file)
    labels = _idx(DIRECTORY / labels_file).astype(np.int64)
    return images, labels


def balanced_slice(
    images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64], per_class: int, offset: int = 0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """`per_class` images of every class (the first ones after `offset` of each), in order."""
    chosen = np.concatenate(
        [np.flatnonzero(labels == c)[offset : offset + per_class] for c in range(len(CLASSES))]
    )
    chosen.sort()
    return images[chosen], labels[chosen]


def png(pixels: npt.NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def folder_name(label: int) -> str:
    return CLASSES[label].replace("/", "-")  # "T-shirt/top" cannot be a folder name


def write_class_folders(
    path: Path, images: Sequence[npt.NDArray[np.uint8]], labels: Sequence[int]
) -> Path:
    """A `.zip` or `.tar.gz` (by `path`'s suffix) of `fashion/<class>/<n>.png`."""
    members = [
        (f"fashion/{folder_name(int(label))}/{index:05d}.png", png(image))
        for index, (image, label) in enumerate(zip(images, labels, strict=True))
    ]
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for name, data in members:
                archive.writestr(name, data)
        return path
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_jsonl(path: Path, images: Sequence[npt.NDArray[np.uint8]], labels: Sequence[int]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for image, label in zip(images, labels, strict=True):
            url = "data:image/png;base64," + base64.b64encode(png(image)).decode("ascii")
            out.write(json.dumps({"image": url, "label": folder_name(int(label))}) + "\n")
    return path
