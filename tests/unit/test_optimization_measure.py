"""How an optimization job times the parent against its result: each model's calls in blocks,
never one call of each in turn (the engine just used keeps its threads spinning on the cores,
which slows the other one down)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

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


class Clock:
    """Time that passes only when a model says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Slow(Recorded):
    """A model whose calls take `costs_s[n]` in its n-th run of calls (a run ends when the
    other model is called; the last cost holds from then on)."""

    def __init__(self, name: str, log: list[str], clock: Clock, costs_s: list[float]) -> None:
        super().__init__(name, log)
        self.clock = clock
        self.costs_s = costs_s
        self.runs = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        if not self.log or self.log[-1] != self.name:
            self.runs += 1
        self.clock.now += self.costs_s[min(self.runs, len(self.costs_s)) - 1]
        return super().embed(texts)


def test_latency_is_the_best_blocks_median_as_other_processes_only_slow_a_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    log: list[str] = []
    # The machine was busy for all but the parent's first block (its 2nd and 3rd blocks run
    # back to back, one run of calls).
    parent = Slow("parent", log, clock, [0.010, 0.100])
    child = Slow("child", log, clock, [0.002])

    metrics = measure_speed(parent, child, "embedding", BUILTIN_TEXTS)

    assert metrics["parent_p50_latency_ms_batch1"] == pytest.approx(10.0)
    assert metrics["p50_latency_ms_batch1"] == pytest.approx(2.0)
