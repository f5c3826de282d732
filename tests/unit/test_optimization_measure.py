"""How an optimization job times the parent against its result: each model's calls in blocks,
never one call of each in turn (the engine just used keeps its threads spinning on the cores,
which slows the other one down)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from openmaas.optimize import measure
from openmaas.optimize.measure import BUILTIN_TEXTS, measure_speed


class Recorded:
    """An embedding model that notes each call in a shared log."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        self.log.append(self.name)
        return np.ones((len(texts), 4), dtype=np.float32)


def test_each_model_is_timed_in_blocks_of_calls_taking_turns() -> None:
    log: list[str] = []
    parent, child = Recorded("parent", log), Recorded("child", log)
    metrics = measure_speed(parent, child, "embedding", BUILTIN_TEXTS)

    # Each model ROUNDS times, which goes first alternating; a latency block is a few warm-up
    # calls and the timed ones, a throughput block a warm-up batch and the timed one.
    turns = [
        name
        for r in range(measure.ROUNDS)
        for name in (("parent", "child"), ("child", "parent"))[r % 2]
    ]
    latency_block = measure.WARMUP_CALLS + measure.LATENCY_RUNS
    expected = [name for name in turns for _ in range(latency_block)]
    expected += [name for name in turns for _ in range(2)]
    assert log == expected
    assert metrics["p50_latency_ms_batch1"] > 0
    assert metrics["parent_throughput_per_s_batch32"] > 0
