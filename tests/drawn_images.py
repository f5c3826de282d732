"""Images the tests draw with Pillow, and the bad files they must be refused for.

Example::

    png = encoded(circle(32, colour=(255, 0, 0)), "PNG")
    bomb = claimed_png(50_000, 50_000)  # a few bytes that claim 2.5 gigapixels
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def circle(
    size: int, colour: tuple[int, int, int] = (255, 255, 255), mode: str = "RGB"
) -> Image.Image:
    image = Image.new(mode, (size, size), 0)
    fill: Any = colour if mode == "RGB" else colour[0]
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=fill)
    return image


def stripes(width: int, height: int) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[::4] = (30, 200, 90)
    return Image.fromarray(pixels)


def solid(width: int, height: int, grey: int = 128) -> Image.Image:
    """One colour: a few kilobytes of PNG that decode to width x height pixels."""
    return Image.new("L", (width, height), grey)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url(data, media_type)}}


def noise_png(side: int, seed: int = 0) -> bytes:
    """A PNG that compresses badly: about 3 bytes a pixel."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def claimed_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, followed by a few rows of them:
    decoding it would allocate the claimed size."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )
