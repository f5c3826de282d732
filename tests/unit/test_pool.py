"""The model pool: one load for concurrent first requests, retry after a failed load, LRU
eviction under the memory budget, idle unload, and no unload under a request in flight.

The models are instances of a small runtime defined here (a real `Runtime` whose "weights"
are a text file), so the tests count loads exactly and make a load fail on purpose.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from openmaas.errors import ModelLoadFailed, ModelNotLoaded, ModelTooLarge, ModelUnloaded
from openmaas.observability.metrics import Metrics
from openmaas.runtimes import base
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.serving.pool import ModelPool, PoolLimits, Preferred, check_fits_budget
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore

MiB = 1 << 20


class WordCountModel(LoadedModel):
    def __init__(self, source: ModelSource, size: int) -> None:
        self.source = source
        self.tasks = frozenset({Task.TEXT_CLASSIFICATION})
        self.memory_bytes = size
        self.labels = ("short", "long")
        self.unloaded = False

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        return [
            base.ranked(self.labels, [1.0, 0.0] if len(t.split()) < 5 else [0.0, 1.0])
            for t in texts
        ]

    def unload(self) -> None:
        self.unloaded = True
        with WordCountRuntime.counter_lock:
            WordCountRuntime.live_mib -= self.memory_bytes // MiB


class WordCountRuntime(Runtime):
    """Loads `weights.txt` (its first line is the model's size in MiB, or "fail")."""

    name = "word-count"
    tasks = frozenset({Task.TEXT_CLASSIFICATION})
    loads: list[str] = []
    gate: threading.Event | None = None
    # Per model label: a load waits for its gate; `entered` is set when it starts waiting.
    gates: dict[str, threading.Event] = {}
    entered: dict[str, threading.Event] = {}
    estimated: dict[str, threading.Event] = {}
    # MiB held by models loading or loaded right now, and the most ever held at once.
    live_mib = 0
    peak_mib = 0
    counter_lock = threading.Lock()

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        text = (source.directory / "weights.txt").read_text()
        WordCountRuntime.estimated.setdefault(source.label, threading.Event()).set()
        return int(text) * MiB if text.isdigit() else MiB

    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        text = (source.directory / "weights.txt").read_text()
        size = int(text) if text.isdigit() else 0
        with WordCountRuntime.counter_lock:  # allocated from here, as from_pretrained does
            WordCountRuntime.live_mib += size
            WordCountRuntime.peak_mib = max(WordCountRuntime.peak_mib, WordCountRuntime.live_mib)
        WordCountRuntime.entered.setdefault(source.label, threading.Event()).set()
        gate = WordCountRuntime.gates.get(source.label, WordCountRuntime.gate)
        if gate is not None:
            assert gate.wait(10)
        WordCountRuntime.loads.append(source.label)
        if not text.isdigit():
            raise OSError(f"weights.txt is corrupt: {text!r}")
        return WordCountModel(source, size * MiB)


@pytest.fixture(autouse=True)
def word_count_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base.RUNTIMES, "word-count", f"{__name__}:WordCountRuntime")
    WordCountRuntime.loads = []
    WordCountRuntime.gate = None
    WordCountRuntime.gates = {}
    WordCountRuntime.entered = {}
    WordCountRuntime.estimated = {}
    WordCountRuntime.live_mib = 0
    WordCountRuntime.peak_mib = 0


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    """Model directories by name; write `weights.txt` to set a size or break a model."""
    directories = {}
    sizes = {"a": "100", "b": "100", "c": "100", "huge": "1000", "broken": "garbage"}
    for name, content in sizes.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "weights.txt").write_text(content)
        directories[name] = directory
    return directories


def _pool(models: dict[str, Path], **limits: float) -> ModelPool:
    def open_source(name: str, version: int) -> ModelSource:
        return ModelSource.for_directory(
            models[name],
            task="text-classification",
            runtime="word-count",
            name=name,
            version=version,
        )

    return ModelPool(open_source, PoolLimits(**limits), Metrics())  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_concurrent_first_requests_load_once(models: dict[str, Path]) -> None:
    pool = _pool(models)
    WordCountRuntime.gate = threading.Event()
    waiting = [asyncio.ensure_future(pool.load(("a", 1))) for _ in range(10)]
    await asyncio.sleep(0)
    WordCountRuntime.gate.set()
    residents = await asyncio.gather(*waiting)
    assert WordCountRuntime.loads == ["a:1"]
    assert len({id(r) for r in residents}) == 1
    await pool.close()


@pytest.mark.asyncio
async def test_failed_load_names_model_and_cause_and_next_request_retries(
    models: dict[str, Path],
) -> None:
    pool = _pool(models)
    outcomes = await asyncio.gather(
        *(pool.load(("broken", 1)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, ModelLoadFailed) for o in outcomes)
    error = outcomes[0]
    assert isinstance(error, ModelLoadFailed)
    assert error.status_code == 503
    assert "broken:1" in error.message
    assert "weights.txt is corrupt" in error.message
    assert WordCountRuntime.loads == ["broken:1"]  # one attempt for the three callers
    (models["broken"] / "weights.txt").write_text("10")  # fixed: the next request loads it
    resident = await pool.load(("broken", 1))
    assert resident.model.memory_bytes == 10 * MiB
    await pool.close()


@pytest.mark.asyncio
async def test_least_recently_used_model_is_evicted_under_the_budget(
    models: dict[str, Path],
) -> None:
    pool = _pool(models, memory_budget_bytes=250 * MiB)
    first = await pool.load(("a", 1))
    await pool.load(("b", 1))
    async with pool.lease(("a", 1)):  # a is now more recently used than b
        pass
    await pool.load(("c", 1))  # 300 MiB > 250: b goes
    assert sorted(r.label for r in pool.residents()) == ["a:1", "c:1"]
    assert not first.model.unloaded  # type: ignore[attr-defined]
    assert pool.resident_bytes == 200 * MiB
    await pool.close()


@pytest.mark.asyncio
async def test_model_in_use_is_not_evicted(models: dict[str, Path]) -> None:
    pool = _pool(models, memory_budget_bytes=150 * MiB)
    async with pool.lease(("a", 1)) as busy:
        await pool.load(("b", 1))  # over budget, but a is serving a request
        assert pool.is_loaded(("a", 1))
        assert pool.is_loaded(("b", 1))
        assert not busy.model.unloaded  # type: ignore[attr-defined]
    await pool.load(("c", 1))  # now a and b are idle: both are evicted for c
    assert [r.label for r in pool.residents()] == ["c:1"]
    await pool.close()


@pytest.mark.asyncio
async def test_idle_models_are_unloaded_but_pinned_ones_stay(models: dict[str, Path]) -> None:
    pool = _pool(models, idle_unload_s=0.05)
    pool.start()
    pinned = await pool.load(("a", 1), pinned=True)
    idle = await pool.load(("b", 1))
    unloaded = 'openmaas_model_unloads_total{model="b",reason="idle"} 1.0'
    # The unload is done when it is counted: the model leaves the pool first, then its
    # weights are freed and its files released, then the metric moves.
    for _ in range(500):
        if unloaded in pool.metrics.render().decode():
            break
        await asyncio.sleep(0.01)
    assert unloaded in pool.metrics.render().decode()
    assert not pool.is_loaded(("b", 1))
    assert idle.model.unloaded  # type: ignore[attr-defined]
    assert pool.is_loaded(("a", 1))
    assert not pinned.model.unloaded  # type: ignore[attr-defined]
    await pool.close()


@pytest.mark.asyncio
async def test_unload_on_request(models: dict[str, Path]) -> None:
    pool = _pool(models)
    with pytest.raises(ModelNotLoaded):
        await pool.unload(("a", 1))
    resident = await pool.load(("a", 1))
    await pool.unload(("a", 1))
    assert resident.model.unloaded  # type: ignore[attr-defined]
    assert not pool.is_loaded(("a", 1))
    await pool.load(("a", 1))
    assert WordCountRuntime.loads == ["a:1", "a:1"]
    await pool.close()


@pytest.mark.asyncio
async def test_an_unload_that_holds_is_refused_by_leases_until_loaded(
    models: dict[str, Path],
) -> None:
    pool = _pool(models, memory_budget_bytes=150 * MiB)
    with pytest.raises(ModelNotLoaded):  # never loaded: held all the same
        await pool.unload(("a", 1), hold=True)
    with pytest.raises(ModelUnloaded) as refused:
        async with pool.lease(("a", 1)):
            pass
    assert (refused.value.status_code, refused.value.reference) == (404, "a:1")
    assert WordCountRuntime.loads == []  # the lease loaded nothing
    await pool.load(("a", 1))  # an explicit load ends the hold
    async with pool.lease(("a", 1)):
        pass
    await pool.load(("b", 1))  # evicts a (over budget): an eviction holds nothing
    async with pool.lease(("a", 1)):
        pass
    assert WordCountRuntime.loads == ["a:1", "b:1", "a:1"]
    await pool.close()


async def _entered(label: str) -> None:
    """Until the load of `label` has started in its thread (and waits at its gate)."""
    event = WordCountRuntime.entered.setdefault(label, threading.Event())
    assert await asyncio.to_thread(event.wait, 10)


@pytest.mark.asyncio
async def test_a_slow_load_does_not_hold_up_another_models_load(models: dict[str, Path]) -> None:
    pool = _pool(models)
    WordCountRuntime.gates["a:1"] = gate = threading.Event()
    slow = asyncio.ensure_future(pool.load(("a", 1)))
    await _entered("a:1")
    b = await pool.load(("b", 1))  # completes while a's load is still in progress
    assert b.label == "b:1"
    assert WordCountRuntime.loads == ["b:1"]
    assert not slow.done()
    gate.set()
    assert (await slow).label == "a:1"
    assert WordCountRuntime.loads == ["b:1", "a:1"]
    await pool.close()


@pytest.mark.asyncio
async def test_concurrent_loads_reserve_the_budget(models: dict[str, Path]) -> None:
    """Two loads in progress hold 200 of 250 MiB: a third waits for one of them to finish and
    evicts it, instead of loading beside both."""
    pool = _pool(models, memory_budget_bytes=250 * MiB)
    WordCountRuntime.gates = {"a:1": threading.Event(), "b:1": threading.Event()}
    first = [asyncio.ensure_future(pool.load((name, 1))) for name in ("a", "b")]
    await _entered("a:1")
    await _entered("b:1")
    assert pool.reserved_bytes == 200 * MiB
    third = asyncio.ensure_future(pool.load(("c", 1)))
    estimated = WordCountRuntime.estimated.setdefault("c:1", threading.Event())
    assert await asyncio.to_thread(estimated.wait, 10)
    for _ in range(20):  # let c's estimate come back and reach the budget check
        await asyncio.sleep(0)
    assert not third.done()
    assert "c:1" not in WordCountRuntime.entered
    for gate in WordCountRuntime.gates.values():
        gate.set()
    await asyncio.gather(*first, third)
    assert WordCountRuntime.peak_mib <= 250
    assert pool.resident_bytes <= 250 * MiB
    assert pool.reserved_bytes == 0
    assert pool.is_loaded(("c", 1))
    await pool.close()


@pytest.mark.asyncio
async def test_a_model_larger_than_the_budget_is_refused_without_loading(
    models: dict[str, Path],
) -> None:
    pool = _pool(models, memory_budget_bytes=250 * MiB)
    with pytest.raises(ModelTooLarge) as refused:
        await pool.load(("huge", 1))
    assert refused.value.status_code == 507
    assert "huge:1" in refused.value.message
    assert "250 MiB" in refused.value.message
    assert WordCountRuntime.loads == []
    assert "huge:1" not in WordCountRuntime.entered
    assert pool.reserved_bytes == 0
    await pool.load(("a", 1))  # the pool is unharmed
    await pool.close()


def test_registration_check_refuses_only_what_exceeds_the_whole_budget(
    models: dict[str, Path],
) -> None:
    def source(name: str, runtime: str = "word-count") -> ModelSource:
        return ModelSource.for_directory(
            models[name], task="text-classification", runtime=runtime, name=name
        )

    check_fits_budget(source("a"), 250 * MiB)
    with pytest.raises(ModelTooLarge, match="model 'huge' needs about 1000 MiB"):
        check_fits_budget(source("huge"), 250 * MiB)
    check_fits_budget(source("huge", runtime="not-in-this-process"), 250 * MiB)
    assert WordCountRuntime.loads == []


def _variant_pool(models: dict[str, Path], variants: dict[str, tuple[int, str]]) -> ModelPool:
    """A pool whose models `variants` names ({model: (variant id, directory name)}) prefer
    that other directory, as a version prefers its ONNX variant."""

    def source(directory: str, name: str, version: int) -> ModelSource:
        return ModelSource.for_directory(
            models[directory],
            task="text-classification",
            runtime="word-count",
            name=name,
            version=version,
        )

    def preferred(name: str, version: int) -> Preferred | None:
        if name not in variants:
            return None
        variant_id, directory = variants[name]
        return Preferred(variant_id, "test variant", lambda: source(directory, name, version))

    return ModelPool(
        lambda name, version: source(name, name, version),
        PoolLimits(),
        Metrics(),
        preferred=preferred,
    )


@pytest.mark.asyncio
async def test_a_preferred_build_loads_and_a_broken_one_falls_back(
    models: dict[str, Path],
) -> None:
    pool = _variant_pool(models, {"a": (1, "c"), "b": (2, "broken")})
    a = await pool.load(("a", 1))
    assert a.model.source.directory == models["c"]  # type: ignore[attr-defined]
    assert a.variant_id == 1
    b = await pool.load(("b", 1))  # its variant fails to load: its own files, no error
    assert b.model.source.directory == models["b"]  # type: ignore[attr-defined]
    assert (b.variant_id, b.served_by) == (2, "word-count")
    assert pool.metrics.model_loads.labels(model="b", outcome="fallback")._value.get() == 1
    async with pool.lease(("b", 1), 2) as leased:  # the same variant: not tried again
        assert leased is b
    await pool.close()


@pytest.mark.asyncio
async def test_a_newer_variant_swaps_the_resident_after_its_requests_finish(
    models: dict[str, Path],
) -> None:
    variants: dict[str, tuple[int, str]] = {}
    pool = _variant_pool(models, variants)
    async with pool.lease(("a", 1)) as before:  # loaded before the variant exists
        variants["a"] = (7, "c")
        async with pool.lease(("a", 1), 7) as after:
            assert after is not before
            assert after.model.source.directory == models["c"]  # type: ignore[attr-defined]
            assert not before.model.unloaded  # type: ignore[attr-defined]  # still serving
            assert pool.resident_bytes == 200 * MiB  # both count until the old one goes
    await asyncio.gather(*pool._retiring.values())  # the old one's unload, now it is idle
    assert before.model.unloaded  # type: ignore[attr-defined]
    assert pool.resident_bytes == 100 * MiB
    async with pool.lease(("a", 1), 7) as again:
        assert again is after
    await pool.close()
