"""Small Keras 3 Conv2D image classifiers, trained for a few steps and saved as tutorials save
them (`model.save("x.keras")`): a grey one on a Fashion-MNIST slice (raw pixels, a `Rescaling`
layer first), an RGB one on circles the test draws (pixels scaled to [0, 1] outside the
model, logits out), and files that must be refused (a Lambda layer, four channels).

Each built model keeps the uint8 pixels it is checked on and Keras's own scores for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks import fashion_mnist

from openmaas.runtimes.keras import import_keras
from tests.drawn_images import circle

SEED = 11
COLOURS = {"red": (230, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}
RGB_SIDE = 32


@dataclass(frozen=True)
class BuiltImageModel:
    directory: Path  # the .keras file, and labels.txt where the model has one
    labels: list[str]
    pixels: np.ndarray[Any, Any]  # uint8 N x H x W x C, the images it is checked on
    expected: np.ndarray[Any, Any]  # Keras's own class probabilities for them


def _softmax(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def fashion_cnn(directory: Path, per_class: int = 20) -> BuiltImageModel:
    """Rescaling + Conv2D + MaxPooling2D + Dropout + Flatten + Dense(softmax), 28 x 28 x 1,
    trained on raw Fashion-MNIST pixels (0-255) for a few steps."""
    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    images, classes = fashion_mnist.balanced_slice(*fashion_mnist.read_split("train"), per_class)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.25),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.005), loss="sparse_categorical_crossentropy")
    model.fit(images[..., None].astype("float32"), classes, epochs=3, batch_size=50, verbose=0)
    test_images, _ = fashion_mnist.balanced_slice(*fashion_mnist.read_split("test"), 1)
    pixels = test_images[..., None]
    expected = np.asarray(model.predict(pixels.astype("float32"), verbose=0))
    directory.mkdir(parents=True)
    model.save(directory / "fashion.keras")
    return BuiltImageModel(directory, list(fashion_mnist.CLASSES), pixels, expected)


def drawn_circles(
    count_per_colour: int, seed: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Circles of each colour at a few sizes, uint8 N x 32 x 32 x 3, and their colour index."""
    rng = np.random.default_rng(seed)
    pixels, classes = [], []
    for index, colour in enumerate(COLOURS.values()):
        for _ in range(count_per_colour):
            side = int(rng.integers(RGB_SIDE // 2, RGB_SIDE + 1))
            canvas = np.zeros((RGB_SIDE, RGB_SIDE, 3), dtype=np.uint8)
            at = int(rng.integers(0, RGB_SIDE - side + 1))
            canvas[at : at + side, at : at + side] = np.asarray(circle(side, colour))
            pixels.append(canvas)
            classes.append(index)
    return np.stack(pixels), np.array(classes)


def drawn_rgb_cnn(directory: Path) -> BuiltImageModel:
    """Conv2D + GlobalAveragePooling2D + Dense logits, 32 x 32 x 3, trained on pixels / 255
    (no Rescaling layer), with labels.txt beside it."""
    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    pixels, classes = drawn_circles(8, seed=1)
    model = keras.Sequential(
        [
            keras.Input(shape=(RGB_SIDE, RGB_SIDE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(COLOURS)),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(pixels / 255.0, classes, epochs=5, batch_size=8, verbose=0)
    checked, _ = drawn_circles(1, seed=2)
    logits = np.asarray(model.predict(checked / 255.0, verbose=0))
    directory.mkdir(parents=True)
    model.save(directory / "colours.keras")
    (directory / "labels.txt").write_text("\n".join(COLOURS) + "\n", encoding="utf-8")
    return BuiltImageModel(directory, list(COLOURS), checked, _softmax(logits))


def lambda_image_model(directory: Path) -> Path:
    """A Conv2D classifier with a Lambda layer (its config carries Python bytecode)."""
    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Lambda(lambda x: x / 255.0),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    directory.mkdir(parents=True)
    model.save(directory / "scaled.keras")
    return directory


def four_channel_model(directory: Path) -> Path:
    """A Conv2D classifier of RGBA pixels: no image converts to four channels here."""
    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input(shape=(16, 16, 4)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    directory.mkdir(parents=True)
    model.save(directory / "rgba.keras")
    return directory
