"""What an optimization bought, measured in the job against its parent on the same machine:
quality against the parent's own outputs, p50 latency at batch 1, throughput at batch 32 and
size on disk. Both models run through their serving runtimes, one after the other, on the
same texts, so the figures compare what serving would do.

Without an evaluation file the texts are `BUILTIN_TEXTS`, and the quality metrics' names
say so (`builtin_mean_cosine_to_parent`): they measure agreement with the parent, not
accuracy on labelled data.

Example::

    quality = compare_outputs(parent, child, "embedding", BUILTIN_TEXTS)
    speed = measure_speed(parent, child, BUILTIN_TEXTS)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN_TEXTS = (
    "The film was a delight from beginning to end.",
    "I would not recommend this restaurant to anyone.",
    "The weather in Paris is mild in spring.",
    "Our quarterly revenue grew by twelve percent.",
    "He forgot his umbrella and got soaked on the way home.",
    "The new phone's battery barely lasts a day.",
    "A quiet evening with a good book is all I want.",
    "The committee postponed its decision until next week.",
    "Terrible service, cold food, and a long wait.",
    "She scored the winning goal in the final minute.",
    "Install the package, then restart the server.",
    "What a wonderful surprise!",
    "ok",
    "The museum's new wing houses modern sculpture from across Europe and Asia.",
    "Prices rose sharply after the storm damaged the harbour.",
    "This is the worst update they have ever shipped.",
)
QUALITY_PREFIX = "builtin_"  # the metrics' names say which texts they were measured on
LATENCY_RUNS = 15  # single-text calls per model, after one warm-up
THROUGHPUT_BATCH = 32
THROUGHPUT_RUNS = 3  # batches of 32 per model; the best counts


@dataclass(frozen=True, slots=True)
class Quality:
    metrics: dict[str, float]
    max_abs_difference: float  # the largest element-wise difference of the outputs


def outputs(model: Any, task: str, texts: Sequence[str]) -> np.ndarray[Any, Any]:
    """Embeddings, or class probabilities in the model's label order."""
    if task == "embedding":
        return np.asarray(model.embed(list(texts)), dtype=np.float64)
    labels = list(model.labels)
    rows = []
    for ranked in model.classify(list(texts)):
        scores = {item.label: item.score for item in ranked}
        rows.append([scores.get(label, 0.0) for label in labels])
    return np.asarray(rows, dtype=np.float64)


def compare_outputs(parent: Any, child: Any, task: str, texts: Sequence[str]) -> Quality:
    expected = outputs(parent, task, texts)
    got = outputs(child, task, texts)
    if expected.shape != got.shape:
        return Quality({}, float("inf"))
    difference = float(np.abs(expected - got).max()) if expected.size else 0.0
    if task == "embedding":
        norms = np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
        cosine = (expected * got).sum(axis=1) / np.maximum(norms, 1e-12)
        metrics = {
            f"{QUALITY_PREFIX}mean_cosine_to_parent": float(cosine.mean()),
            f"{QUALITY_PREFIX}min_cosine_to_parent": float(cosine.min()),
        }
    else:
        agreement = (expected.argmax(axis=1) == got.argmax(axis=1)).mean()
        metrics = {
            f"{QUALITY_PREFIX}agreement_with_parent": float(agreement),
            f"{QUALITY_PREFIX}max_probability_delta": difference,
        }
    return Quality(metrics, difference)


def measure_speed(parent: Any, child: Any, task: str, texts: Sequence[str]) -> dict[str, float]:
    """p50 latency of one text per call and texts per second in batches of 32, for both."""
    parent_p50, child_p50 = _p50_ms(parent, child, task, texts)
    batch = [texts[i % len(texts)] for i in range(THROUGHPUT_BATCH)]
    parent_rate, child_rate = _texts_per_s(parent, child, task, batch)
    return {
        "p50_latency_ms_batch1": child_p50,
        "parent_p50_latency_ms_batch1": parent_p50,
        "latency_speedup_batch1": parent_p50 / max(child_p50, 1e-9),
        "throughput_per_s_batch32": child_rate,
        "parent_throughput_per_s_batch32": parent_rate,
        "throughput_speedup_batch32": child_rate / max(parent_rate, 1e-9),
    }


def size_metrics(parent: Path, child: Path) -> dict[str, float]:
    parent_bytes, child_bytes = directory_bytes(parent), directory_bytes(child)
    return {
        "size_mb": child_bytes / 1e6,
        "parent_size_mb": parent_bytes / 1e6,
        "size_ratio": child_bytes / max(parent_bytes, 1),
    }


def directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def _p50_ms(parent: Any, child: Any, task: str, texts: Sequence[str]) -> tuple[float, float]:
    # Interleaved, so a slow patch of the machine (another process) hits both alike.
    outputs(parent, task, texts[:1])
    outputs(child, task, texts[:1])
    parent_ms: list[float] = []
    child_ms: list[float] = []
    for i in range(LATENCY_RUNS):
        text = [texts[i % len(texts)]]
        for model, times in ((parent, parent_ms), (child, child_ms)):
            started = time.perf_counter()
            outputs(model, task, text)
            times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(parent_ms), statistics.median(child_ms)


def _texts_per_s(parent: Any, child: Any, task: str, batch: Sequence[str]) -> tuple[float, float]:
    # Interleaved like the latencies; the best run counts, since other processes on the
    # machine only ever slow a run down.
    outputs(parent, task, batch)
    outputs(child, task, batch)
    parent_rates: list[float] = []
    child_rates: list[float] = []
    for _ in range(THROUGHPUT_RUNS):
        for model, rates in ((parent, parent_rates), (child, child_rates)):
            started = time.perf_counter()
            outputs(model, task, batch)
            rates.append(len(batch) / max(time.perf_counter() - started, 1e-9))
    return max(parent_rates), max(child_rates)
