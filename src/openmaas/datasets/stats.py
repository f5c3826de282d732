"""Statistics of a dataset's examples: rows, label distribution, lengths, duplicates.

Built in one streaming pass (`StatsBuilder.add`), keeping only fixed-size numbers per row
(a length and two 64-bit hashes), so describing a large file costs little memory.

Example::

    builder = StatsBuilder(Task.TEXT_CLASSIFICATION)
    for example in examples:
        builder.add(example)
    stats = builder.build()
    stats.labels  # {"positive": 540, "negative": 460}
    stats.words.p95 if stats.words else None
"""

from __future__ import annotations

import base64
import hashlib
import io
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from openmaas.datasets.formats import canonical_json
from openmaas.tasks.names import Task

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True, slots=True)
class LengthStats:
    """Lengths by the nearest-rank percentile (every figure is a length that occurs)."""

    min: int
    p50: int
    p90: int
    p95: int
    p99: int
    max: int
    mean: float

    @classmethod
    def of(cls, lengths: Sequence[int]) -> LengthStats | None:
        if not lengths:
            return None
        values = np.asarray(lengths, dtype=np.int64)
        p50, p90, p95, p99 = (
            int(v) for v in np.percentile(values, PERCENTILES, method="inverted_cdf")
        )
        return cls(
            min=int(values.min()),
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            max=int(values.max()),
            mean=round(float(values.mean()), 2),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min": self.min,
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
            "mean": self.mean,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LengthStats | None:
        if not data:
            return None
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class ImageStats:
    """Datasets of images: sizes in pixels, and how many images of each kind."""

    widths: LengthStats | None
    heights: LengthStats | None
    channels: Mapping[str, int]  # "1" (grey) / "3" (colour) -> images
    formats: Mapping[str, int]  # "PNG" -> images

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": self.widths.to_dict() if self.widths else None,
            "heights": self.heights.to_dict() if self.heights else None,
            "channels": dict(self.channels),
            "formats": dict(self.formats),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ImageStats | None:
        if not data:
            return None
        return cls(
            widths=LengthStats.from_dict(data.get("widths")),
            heights=LengthStats.from_dict(data.get("heights")),
            channels=dict(data.get("channels", {})),
            formats=dict(data.get("formats", {})),
        )


@dataclass(frozen=True, slots=True)
class DatasetStats:
    rows: int = 0
    # Text classification: examples per label. Token classification: entities per type.
    labels: Mapping[str, int] = field(default_factory=dict)
    chars: LengthStats | None = None  # characters per text (token classification: tokens
    words: LengthStats | None = None  # joined by spaces); words split on whitespace (tokens)
    duplicates: int = 0  # rows equal to an earlier row
    duplicate_texts: int = 0  # rows whose text (or tokens) equals an earlier row's
    conflicting_labels: int = 0  # distinct texts that appear with more than one label or tags
    images: ImageStats | None = None  # datasets of images

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "labels": dict(self.labels),
            "chars": self.chars.to_dict() if self.chars else None,
            "words": self.words.to_dict() if self.words else None,
            "duplicates": self.duplicates,
            "duplicate_texts": self.duplicate_texts,
            "conflicting_labels": self.conflicting_labels,
            "images": self.images.to_dict() if self.images else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetStats:
        return cls(
            rows=int(data.get("rows", 0)),
            labels=dict(data.get("labels", {})),
            chars=LengthStats.from_dict(data.get("chars")),
            words=LengthStats.from_dict(data.get("words")),
            duplicates=int(data.get("duplicates", 0)),
            duplicate_texts=int(data.get("duplicate_texts", 0)),
            conflicting_labels=int(data.get("conflicting_labels", 0)),
            images=ImageStats.from_dict(data.get("images")),
        )


def entity_types(tags: Iterable[str]) -> list[str]:
    """The type of every entity in a BIO tag sequence, in order."""
    return [tag[2:] for tag in tags if tag.startswith("B-")]


def example_labels(example: Mapping[str, Any], task: Task) -> list[str]:
    """What an example counts towards in a label distribution."""
    if task in (Task.TEXT_CLASSIFICATION, Task.IMAGE_CLASSIFICATION):
        return [str(example["label"])]
    if task is Task.TOKEN_CLASSIFICATION:
        return entity_types(example["tags"])
    return []


def label_counts(examples: Iterable[Mapping[str, Any]], task: Task) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for example in examples:
        counts.update(example_labels(example, task))
    return _ordered(counts)


def _ordered(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class StatsBuilder:
    def __init__(self, task: Task) -> None:
        self.task = task
        self._labels: Counter[str] = Counter()
        self._chars = array("q")
        self._words = array("q")
        self._example_hashes = array("Q")
        self._text_hashes = array("Q")
        self._widths = array("q")
        self._heights = array("q")
        self._channels: Counter[str] = Counter()
        self._formats: Counter[str] = Counter()

    def add(self, example: Mapping[str, Any]) -> None:
        if self.task is Task.IMAGE_CLASSIFICATION:
            self._add_image(example)
            return
        if self.task is Task.TOKEN_CLASSIFICATION:
            tokens: list[str] = example["tokens"]
            text = " ".join(tokens)
            self._words.append(len(tokens))
            key = "\x1f".join(tokens).encode()
        else:
            text = example["text"]
            self._words.append(len(text.split()))
            key = text.encode()
        self._chars.append(len(text))
        self._labels.update(example_labels(example, self.task))
        self._example_hashes.append(_hash64(canonical_json(example)))
        self._text_hashes.append(_hash64(key))

    def _add_image(self, example: Mapping[str, Any]) -> None:
        data = base64.b64decode(example["image"])
        with Image.open(io.BytesIO(data)) as image:  # the header only: checked before
            width, height = image.size
            self._channels["1" if image.mode in ("1", "L", "I", "I;16", "F") else "3"] += 1
            self._formats[str(image.format)] += 1
        self._widths.append(width)
        self._heights.append(height)
        self._labels.update(example_labels(example, self.task))
        self._example_hashes.append(_hash64(canonical_json(example)))
        self._text_hashes.append(_hash64(data))

    def build(self) -> DatasetStats:
        rows = len(self._example_hashes)
        if rows == 0:
            return DatasetStats()
        images = None
        if self.task is Task.IMAGE_CLASSIFICATION:
            images = ImageStats(
                widths=LengthStats.of(self._widths),
                heights=LengthStats.of(self._heights),
                channels=_ordered(self._channels),
                formats=_ordered(self._formats),
            )
        examples = np.frombuffer(self._example_hashes, dtype=np.uint64)
        texts = np.frombuffer(self._text_hashes, dtype=np.uint64)
        pairs = np.unique(np.stack([texts, examples], axis=1), axis=0)
        _, variants = np.unique(pairs[:, 0], return_counts=True)
        return DatasetStats(
            rows=rows,
            labels=_ordered(self._labels),
            chars=LengthStats.of(self._chars),
            words=LengthStats.of(self._words),
            duplicates=rows - len(np.unique(examples)),
            duplicate_texts=rows - len(np.unique(texts)),
            conflicting_labels=int((variants > 1).sum()),
            images=images,
        )
