"""Images as the platform reads them (`openmaas.images`): files and pixel arrays to float
pixels in the model's channels, every limit checked before decoding."""

from __future__ import annotations

import numpy as np
import pytest

from openmaas.errors import InvalidRequest
from openmaas.images import ImageLimits, decode_image, decode_inputs, image_from_array
from tests.drawn_images import circle, claimed_png, encoded, solid

LIMITS = ImageLimits(max_bytes=100_000, max_pixels=10_000)


def test_files_decode_to_the_models_channels() -> None:
    red = encoded(circle(20, (255, 0, 0)))
    rgb = decode_image(red, LIMITS, what="input[0]", channels=3)
    grey = decode_image(red, LIMITS, what="input[0]", channels=1)
    assert rgb.shape == (20, 20, 3)
    assert grey.shape == (20, 20, 1)
    assert rgb.dtype == np.float32
    assert rgb[10, 10].tolist() == [1.0, 0.0, 0.0]
    assert grey[10, 10, 0] == pytest.approx(76 / 255, abs=1e-6)  # Pillow's luma of red
    assert rgb[0, 0].tolist() == [0.0, 0.0, 0.0]


def test_pixels_in_uint8_and_float_agree() -> None:
    pixels = np.asarray(circle(12, (10, 200, 30)))
    as_uint8 = image_from_array(pixels, LIMITS, what="input[0]", channels=3)
    as_float = image_from_array(pixels / 255.0, LIMITS, what="input[0]", channels=3)
    np.testing.assert_allclose(as_uint8, as_float, atol=1e-6)
    grey = image_from_array(pixels[:, :, :1], LIMITS, what="input[0]", channels=3)
    assert grey.shape == (12, 12, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "input[0]: the image is empty"),
        (b"x" * 100_001, "the image file is 100,001 bytes"),
        (b"no image here", "not an image this server decodes"),
        (encoded(circle(30))[:90], "truncated or corrupt"),
        (encoded(solid(101, 100)), "101 x 100 = 10,100 pixels"),
        (claimed_png(200_000, 200_000), "refused as a decompression bomb"),
    ],
)
def test_bad_files_name_the_input_and_why(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        decode_inputs([data], LIMITS, 3)
    assert reason in exc.value.message
    assert exc.value.code == "invalid_image"


def test_bad_pixels_name_the_input_and_why() -> None:
    good = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(InvalidRequest, match=r"input\[1\]: FP32 pixels must be finite"):
        decode_inputs([good, np.full((4, 4, 3), np.nan, dtype=np.float32)], LIMITS, 3)
    with pytest.raises(InvalidRequest, match=r"input\[0\]: pixels of shape \[4, 4, 4\]"):
        decode_inputs([np.zeros((4, 4, 4), dtype=np.uint8)], LIMITS, 3)
    with pytest.raises(InvalidRequest, match="1 to 10,000 pixels"):
        decode_inputs([np.zeros((200, 200), dtype=np.uint8)], LIMITS, 1)
    with pytest.raises(InvalidRequest, match="at least one image"):
        decode_inputs([], LIMITS, 1)
