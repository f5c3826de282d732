"""The keras runtime's image classifiers: Conv2D models saved by the test pass the conformance
suite and score as Keras itself does on the same pixels, whichever form and size the image
comes in; inputs no image converts to are refused when the file is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks import fashion_mnist

from openmaas.errors import InvalidRequest, UnsupportedSource
from openmaas.images import ImageLimits, decode_inputs
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.keras import KerasRuntime, import_keras
from openmaas.runtimes.keras_files import read_keras_file
from openmaas.runtimes.keras_intake import image_input, inspect_keras_model
from tests.drawn_images import encoded
from tests.runtimes.conformance import check_conformance
from tests.runtimes.keras_image_models import (
    BuiltImageModel,
    drawn_rgb_cnn,
    fashion_cnn,
    four_channel_model,
)

# Keras's model.predict on torch: numpy's DeprecationWarning about __array__(copy=...).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
needs_fashion = pytest.mark.skipif(
    not fashion_mnist.available(), reason="apt-get install dataset-fashion-mnist"
)


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> BuiltImageModel:
    return drawn_rgb_cnn(tmp_path_factory.mktemp("keras-images") / "colours")


def _load(built: BuiltImageModel, **params: object) -> object:
    source = ModelSource.for_directory(
        built.directory, task="image-classification", runtime="keras", params=params
    )
    return check_conformance(KerasRuntime(), source, LoadOptions(threads=1))


def _scores(model: object, images: list[np.ndarray], labels: list[str]) -> np.ndarray:
    decoded = model.decode_images(images)  # type: ignore[attr-defined]
    rankings = model.classify_images(decoded)  # type: ignore[attr-defined]
    return np.array([[{s.label: s.score for s in r}[label] for label in labels] for r in rankings])


def test_rgb_model_scores_as_keras_does(colours: BuiltImageModel) -> None:
    model = _load(colours)
    assert model.labels == tuple(colours.labels)  # type: ignore[attr-defined]
    pixels = list(colours.pixels)
    np.testing.assert_allclose(_scores(model, pixels, colours.labels), colours.expected, atol=1e-5)
    # The same images as PNG files, and as FP32 pixels in [0, 1].
    files = [encoded(_image(p)) for p in pixels]
    np.testing.assert_allclose(_scores(model, files, colours.labels), colours.expected, atol=1e-5)
    floats = [p.astype(np.float32) / 255 for p in pixels]
    np.testing.assert_allclose(_scores(model, floats, colours.labels), colours.expected, atol=1e-5)
    # logits (for gradients through the network) give the same probabilities.
    tensors = [
        torch.from_numpy(p.transpose(2, 0, 1).astype(np.float32) / 255).requires_grad_()
        for p in pixels
    ]
    logits = model.logits(tensors)  # type: ignore[attr-defined]
    probabilities = torch.softmax(logits.detach(), dim=1).numpy()
    np.testing.assert_allclose(probabilities, colours.expected, atol=1e-5)
    logits[0, int(colours.expected[0].argmax())].backward()
    assert tensors[0].grad is not None
    assert float(tensors[0].grad.abs().sum()) > 0


def test_other_sizes_are_resized_bilinear_antialiased(colours: BuiltImageModel) -> None:
    model = _load(colours)
    big = np.repeat(np.repeat(colours.pixels[:1], 2, axis=1), 2, axis=2)  # 64 x 64
    tensor = torch.from_numpy(big[0].transpose(2, 0, 1).astype(np.float32) / 255)
    resized = torch.nn.functional.interpolate(
        tensor[None], size=(32, 32), mode="bilinear", antialias=True, align_corners=False
    )[0]
    expected = model.network.predict(resized.permute(1, 2, 0)[None].numpy())  # type: ignore[attr-defined]
    probabilities = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
    np.testing.assert_allclose(_scores(model, [big[0]], colours.labels), probabilities, atol=1e-5)


def test_grey_images_become_rgb_and_the_scale_is_a_param(colours: BuiltImageModel) -> None:
    model = _load(colours)
    grey = np.full((32, 32, 1), 90, dtype=np.uint8)
    as_rgb = np.repeat(grey, 3, axis=2)
    np.testing.assert_allclose(
        _scores(model, [grey], colours.labels), _scores(model, [as_rgb], colours.labels), atol=1e-6
    )
    # pixel_max=255 feeds the same network raw pixels: other scores than Keras's on x / 255.
    raw = _load(colours, pixel_max=255)
    assert not np.allclose(
        _scores(raw, list(colours.pixels), colours.labels), colours.expected, atol=1e-3
    )


@needs_fashion
def test_grey_fashion_model_with_rescaling_scores_as_keras_does(tmp_path: Path) -> None:
    built = fashion_cnn(tmp_path / "fashion")
    keras_file = inspect_keras_model({"fashion.keras": built.directory / "fashion.keras"})
    assert keras_file.task == "image-classification"
    spec = image_input(keras_file, {})
    assert (spec.shape, spec.pixel_max) == ([28, 28, 1], 255.0)
    model = _load(built, labels=built.labels)
    np.testing.assert_allclose(
        _scores(model, list(built.pixels), built.labels), built.expected, atol=1e-5
    )
    # An RGB file of the same grey pixels scores alike (luma of equal channels).
    rgb = [encoded(_image(np.repeat(p, 3, axis=2))) for p in built.pixels[:3]]
    np.testing.assert_allclose(_scores(model, rgb, built.labels), built.expected[:3], atol=1e-5)


def test_inputs_no_image_converts_to_are_refused(colours: BuiltImageModel, tmp_path: Path) -> None:
    path = four_channel_model(tmp_path / "rgba") / "rgba.keras"
    with pytest.raises(UnsupportedSource, match="takes 4 channels per pixel"):
        image_input(read_keras_file(path), {})
    colours_file = read_keras_file(colours.directory / "colours.keras")
    with pytest.raises(UnsupportedSource, match="pixel_max='x'"):
        image_input(colours_file, {"pixel_max": "x"})
    with pytest.raises(InvalidRequest, match=r"input\[0\]: pixels of shape \[8, 8, 2\]"):
        decode_inputs([np.zeros((8, 8, 2), dtype=np.uint8)], ImageLimits(), 3)


def _image(pixels: np.ndarray) -> object:
    from PIL import Image

    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def test_a_rescaling_layer_after_augmentation_means_raw_pixels(tmp_path: Path) -> None:
    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input(shape=(20, 20, 3)),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.save(tmp_path / "augmented.keras")
    spec = image_input(read_keras_file(tmp_path / "augmented.keras"), {})
    assert (spec.shape, spec.pixel_max) == ([20, 20, 3], 255.0)
    # The registration param says otherwise when the user knows better.
    assert (
        image_input(read_keras_file(tmp_path / "augmented.keras"), {"pixel_max": 1}).pixel_max == 1
    )
