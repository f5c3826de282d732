"""What an optimization bought, measured in the job against its parent on the same machine:
quality against the parent's own outputs, p50 latency at batch 1, throughput at batch 32 and
size on disk. Both models run through their serving runtimes, one after the other, on the
same texts, so the figures compare what serving would do.

Without an evaluation file the texts are `BUILTIN_TEXTS`, and the quality metrics' names
say so (`builtin_mean_cosine_to_parent`): they measure agreement with the parent, not
accuracy on labelled data. Taggers are compared by their entities: the share of spans (text,
label, offsets) both models found among those either found, and how far the scores of the
shared ones moved.

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
TOKEN_CLASSIFICATION = "token-classification"  # noqa: S105 - a task name, not a secret
QUALITY_PREFIX = "builtin_"  # the metrics' names say which texts they were measured on
ROUNDS = 3  # blocks per model, in turns with the other model's
WARMUP_CALLS = 3  # single-text calls that start each block, not counted
LATENCY_RUNS = 9  # single-text calls per block, timed; the best block's median counts
THROUGHPUT_BATCH = 32  # one counted batch per block, after a warm-up batch; the best counts


@dataclass(frozen=True, slots=True)
class Quality:
    metrics: dict[str, float]
    max_abs_difference: float  # the largest element-wise difference of the outputs


def outputs(model: Any, task: str, texts: Sequence[str]) -> np.ndarray[Any, Any]:
    """Embeddings, class probabilities in the model's label order, or (taggers) each text's
    entities, one object per text."""
    if task == "embedding":
        return np.asarray(model.embed(list(texts)), dtype=np.float64)
    if task == TOKEN_CLASSIFICATION:
        found = np.empty(len(texts), dtype=object)
        found[:] = model.extract_entities(list(texts))
        return found
    labels = list(model.labels)
    rows = []
    for ranked in model.classify(list(texts)):
        scores = {item.label: item.score for item in ranked}
        rows.append([scores.get(label, 0.0) for label in labels])
    return np.asarray(rows, dtype=np.float64)


def compare_outputs(parent: Any, child: Any, task: str, texts: Sequence[str]) -> Quality:
    expected = outputs(parent, task, texts)
    got = outputs(child, task, texts)
    if task == TOKEN_CLASSIFICATION:
        return _compare_entities(expected, got)
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


def _compare_entities(expected: np.ndarray[Any, Any], got: np.ndarray[Any, Any]) -> Quality:
    """Entity spans of the parent against the child's: agreement is shared spans over all
    spans either found (1.0 when neither found any); the difference is the largest score
    change of a shared span, and 1.0 (a whole probability) as soon as one span differs."""
    shared = either = 0
    score_delta = 0.0
    for parent_entities, child_entities in zip(expected, got, strict=True):
        parent_spans = {_span(entity): entity.score for entity in parent_entities}
        child_spans = {_span(entity): entity.score for entity in child_entities}
        common = parent_spans.keys() & child_spans.keys()
        shared += len(common)
        either += len(parent_spans.keys() | child_spans.keys())
        for span in common:
            score_delta = max(
                score_delta, abs((parent_spans[span] or 0) - (child_spans[span] or 0))
            )
    agreement = shared / either if either else 1.0
    difference = score_delta if shared == either else 1.0
    metrics = {
        f"{QUALITY_PREFIX}entity_agreement_with_parent": agreement,
        f"{QUALITY_PREFIX}entities_of_parent": float(sum(len(row) for row in expected)),
        f"{QUALITY_PREFIX}max_entity_score_delta": score_delta,
    }
    return Quality(metrics, difference)


def _span(entity: Any) -> tuple[str, str, int, int]:
    return (entity.text, entity.label, entity.start, entity.end)


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
    # Each block's median, and the best block counts: other processes on the machine only
    # ever slow a block down (with every core busy, torch's OpenMP threads wait on each other
    # and a MiniLM call took 200 ms instead of 7 on 2 cores; onnxruntime suffered far less).
    medians: dict[int, list[float]] = {id(parent): [], id(child): []}
    for model in _blocks(parent, child):
        for _ in range(WARMUP_CALLS):
            outputs(model, task, texts[:1])
        times = []
        for i in range(LATENCY_RUNS):
            started = time.perf_counter()
            outputs(model, task, [texts[i % len(texts)]])
            times.append((time.perf_counter() - started) * 1000.0)
        medians[id(model)].append(statistics.median(times))
    return min(medians[id(parent)]), min(medians[id(child)])


def _texts_per_s(parent: Any, child: Any, task: str, batch: Sequence[str]) -> tuple[float, float]:
    # The best run counts, since other processes on the machine only ever slow a run down.
    rates: dict[int, list[float]] = {id(parent): [], id(child): []}
    for model in _blocks(parent, child):
        outputs(model, task, batch)  # warm-up
        started = time.perf_counter()
        outputs(model, task, batch)
        rates[id(model)].append(len(batch) / max(time.perf_counter() - started, 1e-9))
    return max(rates[id(parent)]), max(rates[id(child)])


def _blocks(parent: Any, child: Any) -> list[Any]:
    """The order of the measuring blocks: each model's calls back to back, the models taking
    turns, which goes first alternating, so a slow patch of the machine hits both alike.
    Never one call of each in turn: the engine just used keeps its threads spinning on the
    cores for a while after a call (OpenMP, onnxruntime), and the other one's threads then
    wait on them; measured call by call, both engines slowed down (MiniLM under PyTorch from
    6 to 14 ms a text, beside onnxruntime on 2 cores)."""
    return [m for r in range(ROUNDS) for m in ((parent, child) if r % 2 == 0 else (child, parent))]
