"""Images as the platform reads them: encoded files (PNG, JPEG, ...) and pixel arrays turned
into float32 arrays, height x width x channels, values in [0, 1], under size limits.

Shared by serving (`tasks.image_classification`), datasets of images and the recipes, so one
file is judged alike everywhere. Every check that can be made from the file's header is made
before any pixel is decoded: the encoded size, the format, then the pixel count (a small PNG
of one colour can claim 50,000 x 50,000 pixels, 7.5 GB once decoded: a decompression bomb).
Pillow's own bomb check (`Image.MAX_IMAGE_PIXELS`) stays on underneath ours.

Example::

    limits = ImageLimits(max_bytes=10 * MiB, max_pixels=25_000_000)
    pixels = decode_image(png_bytes, limits, what="input[0]", channels=3)
    pixels.shape, pixels.dtype  # (28, 28, 3) float32
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from openmaas.errors import InvalidRequest

MiB = 1024 * 1024
# The formats read: common photo and screenshot formats. Pillow reads dozens more (some
# rarely exercised decoders among them); a model input needs none of them.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
CHANNEL_COUNTS = (1, 3)  # grey or RGB, as models take them
# ITU-R BT.601 luma, as Pillow's convert("L") weighs RGB.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

FloatImage = npt.NDArray[np.float32]  # H x W x C, values in [0, 1]


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What one image may be: `max_bytes` encoded, `max_pixels` (width x height) decoded."""

    max_bytes: int = 10 * MiB
    max_pixels: int = 25_000_000


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What a file's header says, read without decoding its pixels."""

    format: str
    width: int
    height: int
    mode: str  # Pillow's: "L", "RGB", "RGBA", "P", ...

    @property
    def channels(self) -> int:
        return 1 if self.mode in ("1", "L", "I", "I;16", "F") else 3


def bad_image(what: str, why: str, param: str = "input") -> InvalidRequest:
    return InvalidRequest(f"{what}: {why}", param=param, code="invalid_image")


def open_image(data: bytes, limits: ImageLimits, *, what: str, param: str = "input") -> Image.Image:
    """The image, opened (header read, pixels not yet decoded) and checked against `limits`."""
    if not data:
        raise bad_image(what, "the image is empty", param)
    if len(data) > limits.max_bytes:
        raise bad_image(
            what,
            f"the image file is {_size(len(data))}; this server takes images up to "
            f"{_size(limits.max_bytes)} (OPENMAAS_MAX_IMAGE_MB)",
            param,
        )
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise bad_image(what, f"refused as a decompression bomb ({exc})", param) from None
    except UnidentifiedImageError:
        raise bad_image(
            what,
            f"not an image this server decodes (send {', '.join(FORMATS)})",
            param,
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise bad_image(what, f"the image header is corrupt ({exc})", param) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise bad_image(what, f"the image is {width} x {height} pixels", param)
    if width * height > limits.max_pixels:
        raise bad_image(
            what,
            f"the image is {width} x {height} = {width * height:,} pixels; this server "
            f"decodes at most {limits.max_pixels:,} (OPENMAAS_MAX_IMAGE_PIXELS): refused "
            "before decoding, as a possible decompression bomb",
            param,
        )
    return image


def image_facts(data: bytes, limits: ImageLimits, *, what: str) -> ImageFacts:
    image = open_image(data, limits, what=what)
    return ImageFacts(str(image.format), image.size[0], image.size[1], image.mode)


def decode_image(
    data: bytes, limits: ImageLimits, *, what: str, channels: int, param: str = "input"
) -> FloatImage:
    """The first frame's pixels in `channels` (1: grey, 3: RGB), H x W x C in [0, 1]."""
    image = open_image(data, limits, what=what, param=param)
    try:
        image.load()
        converted = image.convert("L" if channels == 1 else "RGB")
    except Image.DecompressionBombError as exc:
        raise bad_image(what, f"refused as a decompression bomb ({exc})", param) from None
    except (OSError, ValueError, SyntaxError) as exc:
        # Pillow says "image file is truncated" for a file cut short.
        raise bad_image(what, f"the image data is truncated or corrupt ({exc})", param) from None
    pixels = np.asarray(converted, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels


def image_from_array(
    array: npt.NDArray[Any], limits: ImageLimits, *, what: str, channels: int
) -> FloatImage:
    """Pixels sent as numbers: uint8 (0-255) or float (0-1), H x W or H x W x C (C 1 or 3)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in CHANNEL_COUNTS:
        raise bad_image(
            what, f"pixels of shape {list(array.shape)}; send H x W x C with C 1 or 3", "inputs"
        )
    height, width = array.shape[:2]
    if height < 1 or width < 1 or height * width > limits.max_pixels:
        raise bad_image(
            what,
            f"the image is {width} x {height} pixels; this server takes 1 to "
            f"{limits.max_pixels:,} pixels (OPENMAAS_MAX_IMAGE_PIXELS)",
            "inputs",
        )
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32) / 255.0
    else:
        pixels = array.astype(np.float32)
        if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
            raise bad_image(
                what, "FP32 pixels must be finite and in [0, 1] (or send UINT8 0-255)", "inputs"
            )
    return with_channels(pixels, channels)


def decode_inputs(
    inputs: Sequence[bytes | npt.NDArray[Any]], limits: ImageLimits, channels: int
) -> list[FloatImage]:
    """Each request input (an encoded file or pixels) decoded; InvalidRequest names the first
    bad one (`input[i]`)."""
    if not inputs:
        raise InvalidRequest("input: send at least one image", param="input")
    decoded = []
    for index, item in enumerate(inputs):
        what = f"input[{index}]"
        if isinstance(item, bytes):
            decoded.append(decode_image(item, limits, what=what, channels=channels))
        else:
            decoded.append(image_from_array(item, limits, what=what, channels=channels))
    return decoded


def with_channels(pixels: FloatImage, channels: int) -> FloatImage:
    """Grey to RGB by repeating it, RGB to grey by luma."""
    have = pixels.shape[2]
    if have == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=2)
    grey: FloatImage = (pixels @ LUMA)[:, :, None].astype(np.float32)
    return grey


def _size(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size:,} bytes"
