"""The model pool: loads models on first use, keeps them under a memory budget, unloads idle ones.

* Concurrent first requests for one version share one load.
* A failed load is reported to every waiting caller as `ModelLoadFailed` (naming the model and
  the cause) and forgotten, so the next request tries again.
* Models load concurrently, each under its own shared future: a slow load delays only the
  requests for that model. Each load reserves its estimated memory before it starts (the
  runtime's estimate: for transformers, what the config declares, not the file size); a model
  whose estimate exceeds the whole budget is refused with `ModelTooLarge` (507).
* Least-recently-used models are evicted to make room for a new one; a model with requests in
  flight, pinned, or still loading is never evicted or unloaded under them.
* Models idle for `idle_unload_s` are unloaded; preloaded (pinned) models stay.
* A model unloaded on request with `hold=True` stays unloaded: a lease refuses it with
  `ModelUnloaded` until `load` loads it again (Triton's explicit model control). Eviction and
  idle unloads hold nothing: the next lease loads the model again.
* A version with a preferred variant (its ONNX export) loads the variant's files with the
  variant's runtime; a variant that fails to open or load falls back to the version's own
  files with a warning, never an error to the caller. `retire` swaps a resident for a fresh
  load (a variant that appeared since) without failing the requests it is serving.
* A version encrypted at rest is opened as a private decrypted copy; the copy (and those of
  dependencies the runtime opens) is deleted as soon as the runtime has loaded, or at unload
  for a runtime that reads files later (`Runtime.reads_files_after_load`).

Example::

    pool = ModelPool(open_source, PoolLimits(memory_budget_bytes=8 << 30), metrics)
    pool.start()
    async with pool.lease(version) as resident:
        vectors = await resident.batcher("embed", ...).submit(text, tokens)
    await pool.close()
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

from openmaas.errors import (
    ModelLoadFailed,
    ModelNotLoaded,
    ModelTooLarge,
    ModelUnloaded,
    OpenMaaSError,
)
from openmaas.observability.metrics import Metrics
from openmaas.runtimes.base import RUNTIMES, LoadedModel, LoadOptions, ModelSource, get_runtime
from openmaas.serving.batcher import Batcher

log = logging.getLogger(__name__)

VersionKey = tuple[str, int]  # (`project/name`, version number): names are per project


def model_label(key: VersionKey) -> str:
    """The model's own name, for metrics and messages (the project part is the pool's)."""
    return key[0].split("/", 1)[-1]


SourceOpener = Callable[[str, int], ModelSource]  # hash-verified source of name:version


@dataclass(frozen=True, slots=True)
class Preferred:
    """Another build of a version that serves in place of its own files (its ONNX variant):
    `open` gives its hash-verified source; `id` tells one build from a newer one."""

    id: int
    label: str  # for logs: "onnx variant"
    open: Callable[[], ModelSource]


PreferredFor = Callable[[str, int], Preferred | None]  # name:version's variant, if any
# The source of a dependency (a reference) that the model being loaded (the key) names.
DependencyFor = Callable[[VersionKey, str], ModelSource]


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class PoolLimits:
    memory_budget_bytes: int = 8 << 30
    idle_unload_s: float = 0.0  # 0 = never


@dataclass(eq=False, slots=True)
class Resident:
    """A loaded model with its worker thread and batchers."""

    key: VersionKey
    model: LoadedModel
    executor: ThreadPoolExecutor
    load_seconds: float
    pinned: bool = False
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    batchers: dict[str, Batcher[Any, Any]] = field(default_factory=dict)
    release_files: Callable[[], None] = _nothing  # decrypted copies kept while it is loaded
    served_by: str = ""  # the runtime of the files it loaded
    variant_id: int | None = None  # the preferred build it tried (loaded or fell back from)
    drained: asyncio.Event | None = None  # set when a retired resident has nothing in flight

    @property
    def label(self) -> str:
        return f"{model_label(self.key)}:{self.key[1]}"


class ModelPool:
    def __init__(
        self,
        open_source: SourceOpener,
        limits: PoolLimits,
        metrics: Metrics,
        options: LoadOptions | None = None,
        open_dependency: DependencyFor | None = None,
        preferred: PreferredFor | None = None,
    ) -> None:
        self._open_source = open_source
        self._preferred = preferred
        self.limits = limits
        self.metrics = metrics
        self.options = options or LoadOptions()
        # Dependencies are opened on behalf of the model that names them (its project decides
        # what it may name); without this, `options.open_dependency` as given.
        self._open_dependency = open_dependency
        self._residents: dict[VersionKey, Resident] = {}
        self._loading: dict[VersionKey, asyncio.Future[Resident]] = {}
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        # Loads run concurrently, one per model (`_loading` shares each among its callers).
        # Each reserves its estimate before it starts, in one step with the budget check, so
        # two loads cannot both pass a check that each alone passes; a reservation turns into
        # the resident's own bytes when its load ends.
        self._reserved: dict[VersionKey, int] = {}
        self._held: set[VersionKey] = set()  # unloaded on request, until loaded again
        # Swapped out by `retire`: unloaded once their requests in flight are done; their
        # memory counts until then.
        self._retiring: dict[Resident, asyncio.Task[None]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._reaper is None and self.limits.idle_unload_s > 0:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for resident in list(self._residents.values()):
            await self._unload(resident, reason="shutdown")
        for resident, task in list(self._retiring.items()):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            if self._retiring.pop(resident, None) is not None:
                await self._dispose(resident, reason="shutdown")

    # -- reading -----------------------------------------------------------------------------

    def residents(self) -> list[Resident]:
        return list(self._residents.values())

    def get_loaded(self, key: VersionKey) -> Resident | None:
        return self._residents.get(key)

    def is_loaded(self, key: VersionKey) -> bool:
        return key in self._residents

    def served_by(self, key: VersionKey) -> str | None:
        """The runtime the loaded `key` runs on; None when it is not loaded."""
        resident = self._residents.get(key)
        return resident.served_by if resident is not None else None

    def is_held(self, key: VersionKey) -> bool:
        """Unloaded on request and held so: a lease refuses it until `load`."""
        return key in self._held

    @property
    def resident_bytes(self) -> int:
        residents = [*self._residents.values(), *self._retiring]
        return sum(r.model.memory_bytes for r in residents)

    @property
    def reserved_bytes(self) -> int:
        """Bytes reserved by loads in progress."""
        return sum(self._reserved.values())

    # -- use ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, key: VersionKey, variant: int | None = None) -> AsyncIterator[Resident]:
        """The loaded model for `key`, loading it if needed; it is not unloaded while leased.
        `ModelUnloaded` for a model held unloaded. `variant`: the preferred build the caller's
        resolution of the version lists (its id); a resident that tried an older one, or
        none (loaded before the variant existed), is retired and `key` loaded afresh. Only
        newer: a variant that failed to load is not retried per request, and a stale
        resolution never swaps a fresher load back."""
        current = self._residents.get(key)
        if variant is not None and self._preferred is not None and current is not None:
            tried = current.variant_id
            if tried is None or tried < variant:
                self.retire(key, reason="variant")
        resident = await self._obtain(key)
        # Another model's load may have evicted this one between its load and this turn of
        # the loop (it was idle for that instant): load it again rather than use it unloaded
        # (unless that was an unload on request that holds it).
        while self._residents.get(key) is not resident:
            resident = await self._obtain(key)
        resident.in_flight += 1
        resident.last_used = time.monotonic()
        try:
            yield resident
        finally:
            resident.in_flight -= 1
            resident.last_used = time.monotonic()
            if resident.in_flight == 0 and resident.drained is not None:
                resident.drained.set()
            self._changed.set()

    async def load(self, key: VersionKey, *, pinned: bool = False) -> Resident:
        """The loaded model for `key`, loading it if needed; a hold on it ends once loaded."""
        resident = await self._get(key, pinned)
        self._held.discard(key)
        return resident

    async def unload(self, key: VersionKey, *, hold: bool = False) -> None:
        """Unload `key` now; with `hold`, leases refuse it until `load` (even when it was not
        loaded: then only `ModelNotLoaded` says so)."""
        if hold:
            self._held.add(key)
        resident = self._residents.get(key)
        if resident is None:
            label = f"{model_label(key)}:{key[1]}"
            raise ModelNotLoaded(f"model '{label}' is not loaded", param="model")
        await self._unload(resident, reason="requested")

    def retire(self, key: VersionKey, reason: str) -> None:
        """Swap `key`'s resident out: the next lease loads it afresh (a variant that appeared
        since it was loaded); the old one finishes what it has in flight, then unloads."""
        resident = self._residents.pop(key, None)
        if resident is None:
            return
        resident.drained = asyncio.Event()
        if resident.in_flight == 0:
            resident.drained.set()
        task = asyncio.get_running_loop().create_task(self._retire(resident, reason))
        self._retiring[resident] = task

    async def _retire(self, resident: Resident, reason: str) -> None:
        assert resident.drained is not None
        await resident.drained.wait()
        if self._retiring.pop(resident, None) is not None:
            await self._dispose(resident, reason=reason)

    # -- internals ---------------------------------------------------------------------------

    async def _obtain(self, key: VersionKey) -> Resident:
        if key in self._held:
            label = f"{model_label(key)}:{key[1]}"
            raise ModelUnloaded(
                f"model '{label}' was unloaded on request and is not loaded again on demand",
                reference=label,
            )
        return await self._get(key, pinned=False)

    async def _get(self, key: VersionKey, pinned: bool) -> Resident:
        resident = self._residents.get(key)
        if resident is not None:
            resident.pinned = resident.pinned or pinned
            return resident
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            asyncio.get_running_loop().create_task(self._load(key, pending, pinned))
        # shield: a caller that goes away must not cancel the load others wait for
        return await asyncio.shield(pending)

    async def _load(self, key: VersionKey, pending: asyncio.Future[Resident], pinned: bool) -> None:
        label = f"{model_label(key)}:{key[1]}"
        options = self.options
        if self._open_dependency is not None:
            opener = functools.partial(self._open_dependency, key)
            options = replace(options, open_dependency=opener)
        files = _LoadFiles(options)
        model: LoadedModel | None = None
        preferred: Preferred | None = None
        try:
            try:
                if self._preferred is not None:
                    preferred = await asyncio.to_thread(self._preferred, *key)
                loaded = None
                if preferred is not None:
                    loaded = await self._load_preferred(key, label, preferred, files)
                from_preferred = loaded is not None
                if loaded is None:
                    source = files.add(await asyncio.to_thread(self._open_source, *key))
                    loaded = await self._load_source(key, label, source, files)
                source, model, executor, seconds = loaded
            finally:
                # Decrypted plaintext lives only as long as the runtime needs it.
                release_later = await asyncio.to_thread(files.release, loaded=model is not None)
        except Exception as exc:
            self._reserved.pop(key, None)
            self._loading.pop(key, None)
            self.metrics.model_loads.labels(model=model_label(key), outcome="error").inc()
            log.warning("loading %s failed: %s", label, exc, exc_info=exc)
            pending.set_exception(
                exc if isinstance(exc, ModelTooLarge) else _load_error(label, exc)
            )
            pending.exception()  # mark retrieved: callers may all have gone
            self._changed.set()
            return
        resident = Resident(
            key,
            model,
            executor,
            seconds,
            pinned=pinned,
            release_files=release_later,
            served_by=source.runtime,
            variant_id=preferred.id if preferred is not None else None,
        )
        # One step, no await between: the reservation becomes the resident's measured bytes.
        self._reserved.pop(key, None)
        self._residents[key] = resident
        self._loading.pop(key, None)
        self.metrics.model_loads.labels(model=model_label(key), outcome="ok").inc()
        self.metrics.model_load_seconds.labels(model=model_label(key)).observe(seconds)
        self._report_memory()
        log.info(
            "loaded %s in %.2f s (%.0f MiB, %s)",
            label,
            seconds,
            model.memory_bytes / (1 << 20),
            f"from its {preferred.label}" if preferred and from_preferred else source.runtime,
        )
        pending.set_result(resident)
        self._changed.set()

    async def _load_source(
        self, key: VersionKey, label: str, source: ModelSource, files: _LoadFiles
    ) -> tuple[ModelSource, LoadedModel, ThreadPoolExecutor, float]:
        """Estimate, reserve and load `source` in a new model thread."""
        runtime = get_runtime(source.runtime)
        try:
            estimate = await asyncio.to_thread(runtime.estimate_memory_bytes, source)
        except ModelTooLarge as exc:
            raise ModelTooLarge(f"model '{label}': {exc.message}", param="model") from exc
        await self._reserve(key, label, estimate)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{label}")
        started = time.perf_counter()
        try:
            model = await asyncio.get_running_loop().run_in_executor(
                executor, runtime.load, source, files.options
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return source, model, executor, time.perf_counter() - started

    async def _load_preferred(
        self, key: VersionKey, label: str, preferred: Preferred, files: _LoadFiles
    ) -> tuple[ModelSource, LoadedModel, ThreadPoolExecutor, float] | None:
        """The preferred build loaded, or None (logged) when it cannot be: the caller then
        loads the version's own files, so a bad variant never fails a request."""
        try:
            source = files.add(await asyncio.to_thread(preferred.open))
            return await self._load_source(key, label, source, files)
        except Exception as exc:
            self._reserved.pop(key, None)
            self.metrics.model_loads.labels(model=model_label(key), outcome="fallback").inc()
            log.warning(
                "loading %s from its %s failed (%s); serving its own files instead",
                label,
                preferred.label,
                exc.message if isinstance(exc, OpenMaaSError) else f"{type(exc).__name__}: {exc}",
            )
            return None

    async def _reserve(self, key: VersionKey, label: str, needed: int) -> None:
        """Reserve `needed` bytes of the budget for `key`'s load, evicting idle models (least
        recently used first) until they fit. A model that alone exceeds the budget is refused.
        When nothing is evictable, the load waits for loads that already hold a reservation
        (they wait on nothing, so this cannot deadlock) and then overcommits with a warning
        rather than fail a model whose neighbours are merely busy."""
        budget = self.limits.memory_budget_bytes
        if needed > budget:
            raise _too_large(label, needed, budget)
        while self.resident_bytes + self.reserved_bytes + needed > budget:
            victims = sorted(
                (r for r in self._residents.values() if r.in_flight == 0 and not r.pinned),
                key=lambda r: r.last_used,
            )
            if victims:
                await self._unload(victims[0], reason="evicted")
                continue
            reserved = [self._loading[k] for k in self._reserved if k in self._loading]
            if reserved:
                # A finished load adds a resident that may be evictable, or frees its share.
                await asyncio.wait(reserved, return_when=asyncio.FIRST_COMPLETED)
                continue
            log.warning(
                "memory budget %d MiB exceeded: %d MiB resident and %d MiB needed, but "
                "every loaded model is in use or pinned",
                _mib(budget),
                _mib(self.resident_bytes),
                _mib(needed),
            )
            break
        self._reserved[key] = needed

    async def _unload(self, resident: Resident, *, reason: str) -> None:
        if self._residents.get(resident.key) is not resident:
            return
        del self._residents[resident.key]  # new requests load afresh from here on
        await self._dispose(resident, reason=reason)

    async def _dispose(self, resident: Resident, *, reason: str) -> None:
        for batcher in resident.batchers.values():
            await batcher.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(resident.executor, resident.model.unload)
        resident.executor.shutdown(wait=False)
        await asyncio.to_thread(resident.release_files)
        self.metrics.model_unloads.labels(model=model_label(resident.key), reason=reason).inc()
        self._report_memory()
        log.info("unloaded %s (%s)", resident.label, reason)

    def _report_memory(self) -> None:
        self.metrics.resident_bytes.set(self.resident_bytes)
        self.metrics.loaded_models.set(len(self._residents))

    async def _reap_idle(self) -> None:
        idle_s = self.limits.idle_unload_s
        while True:
            now = time.monotonic()
            candidates = [r for r in self._residents.values() if not r.pinned and r.in_flight == 0]
            for resident in candidates:
                if now - resident.last_used >= idle_s:
                    await self._unload(resident, reason="idle")
            remaining = [
                r.last_used + idle_s - now
                for r in self._residents.values()
                if not r.pinned and r.in_flight == 0
            ]
            self._changed.clear()
            # Wake at the next idle deadline, or when a model is loaded or released.
            timeout = max(0.01, min(remaining)) if remaining else None
            # `asyncio.timeout`, not `wait_for`: on Python 3.11, cancelling a `wait_for` whose
            # inner `Event.wait()` task had just been woken left the reaper "cancelling" for
            # ever, and `close()` (server shutdown) waiting on it.
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()


class _LoadFiles:
    """Every source one load opens (the model's, and dependencies' its runtime opens through
    `LoadOptions.open_dependency`), so that their decrypted copies can be deleted after."""

    def __init__(self, options: LoadOptions) -> None:
        self._open_dependency = options.open_dependency
        self.options = replace(options, open_dependency=self._record_dependency)
        self.sources: list[ModelSource] = []

    def add(self, source: ModelSource) -> ModelSource:
        self.sources.append(source)
        return source

    def _record_dependency(self, reference: str) -> ModelSource:
        return self.add(self._open_dependency(reference))

    def release(self, *, loaded: bool) -> Callable[[], None]:
        """Delete the copies no loaded model reads any more; returns what deletes the rest."""
        kept = []
        for source in self.sources:
            if loaded and _reads_files_after_load(source.runtime):
                kept.append(source.release_directory)
            else:
                source.release_directory()
        if not kept:
            return _nothing

        def release_kept() -> None:
            for release in kept:
                release()

        return release_kept


def _reads_files_after_load(runtime: str) -> bool:
    try:
        return get_runtime(runtime).reads_files_after_load
    except OpenMaaSError:
        return False


def check_fits_budget(source: ModelSource, budget_bytes: int) -> None:
    """Refuse, with `ModelTooLarge`, a model whose estimated memory exceeds the whole budget:
    the registry calls this before it numbers a new version, so that a model that could never
    load is refused at upload, not at its first request. Any other failure of the estimate is
    left for the load to report, with its cause."""
    if source.runtime not in RUNTIMES:
        return  # a runtime this process lacks: the load names it
    try:
        needed = get_runtime(source.runtime).estimate_memory_bytes(source)
    except ModelTooLarge as exc:
        raise ModelTooLarge(f"model '{source.name}': {exc.message}", param="model") from exc
    except Exception as exc:
        log.debug("no memory estimate for %s at registration: %s", source.name, exc)
        return
    if needed > budget_bytes:
        raise _too_large(source.name, needed, budget_bytes)


def _too_large(label: str, needed: int, budget: int) -> ModelTooLarge:
    return ModelTooLarge(
        f"model '{label}' needs about {_mib(needed)} MiB once loaded (from what its config "
        f"declares and its weight files), more than this server's whole model memory budget "
        f"of {_mib(budget)} MiB (OPENMAAS_MEMORY_BUDGET_MB)",
        param="model",
    )


def _mib(size: int) -> int:
    return size >> 20


def _load_error(label: str, exc: Exception) -> ModelLoadFailed:
    cause = exc.message if isinstance(exc, OpenMaaSError) else f"{type(exc).__name__}: {exc}"
    return ModelLoadFailed(f"model '{label}' could not be loaded: {cause}", param="model")
