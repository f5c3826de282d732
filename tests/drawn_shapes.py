"""A two-class image dataset the tests draw: a white square in the top-left corner of a dim,
noisy picture, or in its bottom-right corner (position and size jittered), so that where
an image classifier looks is known: at the square.

Example::

    rows = corner_squares(40, seed=0)  # [{"image": "data:image/png;base64,...", "label": ...}]
    image, box = square_at(32, 32, x=1, y=1, side=7)  # box = (x, y, width, height)
"""

from __future__ import annotations

import json
import random

import numpy as np
from PIL import Image

from tests.drawn_images import data_url, encoded

SIDE = 32
LABELS = ("top-left", "bottom-right")
Box = tuple[int, int, int, int]  # x, y, width, height


def square_at(
    width: int, height: int, *, x: int, y: int, side: int, seed: int = 0
) -> tuple[Image.Image, Box]:
    """A grey picture of dim noise with a white square at (x, y); the square's box."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (height, width), dtype=np.uint8)
    pixels[y : y + side, x : x + side] = 255
    return Image.fromarray(pixels, mode="L"), (x, y, side, side)


def corner_squares(per_class: int, *, seed: int) -> list[dict[str, str]]:
    """`per_class` pictures of each label, as JSON Lines rows of image datasets."""
    draw = random.Random(seed)
    rows = []
    for index in range(per_class):
        for label in LABELS:
            side = draw.randint(7, 10)
            offset_x, offset_y = draw.randint(1, 5), draw.randint(1, 5)
            if label == "top-left":
                x, y = offset_x, offset_y
            else:
                x, y = SIDE - side - offset_x, SIDE - side - offset_y
            image, _ = square_at(SIDE, SIDE, x=x, y=y, side=side, seed=seed * 1000 + index)
            rows.append({"image": data_url(encoded(image)), "label": label})
    return rows


def jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
