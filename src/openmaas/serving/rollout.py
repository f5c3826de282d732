"""Rollouts on the serving side: which version of a split alias answers a request, what each
version's requests did, shadow comparisons, and the automatic rollback.

`Rollout` keeps the traffic splits (`registry.traffic`) in memory, read again every `ttl_s`
and at once after a change made through this process's registry. For a request whose
reference names a split alias (`name@alias`, or a bare `name` for `production`), `pick`
chooses a version by weight, or by the hash of the split's sticky header so one user stays
on one version (the same on every server process: the hash is of the split id and the
header's value). One request decides once: a route that resolves twice (the `/v2` routes
look a model up, then infer) gets the same version both times through the request's
`Routing`, set by the API's request middleware.

Each split's versions count requests, server errors and latencies (`VersionStats`, since the
split started, in this process). When a candidate has answered `min_requests` requests and
its error rate exceeds the baseline's by more than `max_error_rate_delta`, or its p99 latency
exceeds `max_p99_ratio` times the baseline's, the split is taken out of routing at once and
`on_rollback` ends it in the registry and records why, with the figures.

Example::

    rollout = Rollout(registry, ttl_s=2.0, metrics=metrics, on_rollback=end_and_audit)
    split = await rollout.split_for(version, "bert@production")
    if split is not None:
        number = rollout.pick(split)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from openmaas.auth.entities import SYSTEM
from openmaas.errors import NotFound, OpenMaaSError
from openmaas.observability.metrics import Metrics
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion
from openmaas.registry.names import DEFAULT_ALIAS, parse_reference, qualified
from openmaas.registry.traffic import TrafficSplit
from openmaas.serving.priority import background_work
from openmaas.serving.router import ModelRouter
from openmaas.tasks.catalogue import get_task

log = logging.getLogger(__name__)
T = TypeVar("T")

LATENCY_WINDOW = 4096  # the latest latencies per version and split, for p50/p99
# A candidate's p99 is judged on every 10th of its requests, not on each: a percentile sorts
# the window, too much work for every request (the error rate is a division, judged always).
P99_EVERY = 10
# Shadow runs waiting or running at once per process; more are skipped (never queued
# without bound behind live traffic).
MAX_SHADOW_RUNS = 8


@dataclass
class Routing:
    """One request's routing: its headers (for sticky splits) and the versions chosen."""

    headers: Sequence[tuple[bytes, bytes]] = ()
    chosen: dict[int, int] = field(default_factory=dict)  # split id -> version number

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None


routing_var: ContextVar[Routing | None] = ContextVar("openmaas_routing", default=None)


@dataclass
class VersionStats:
    """What one version of a split did since the split started (this process)."""

    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    shadow_compared: int = 0  # shadow answers compared with the live one
    shadow_agreement: float = 0.0  # their sum of agreement (or cosine) per item
    shadow_items: int = 0
    shadow_errors: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        return float(np.percentile(np.fromiter(self.latencies, dtype=np.float64), q))

    def summary(self) -> dict[str, Any]:
        p50, p99 = self.percentile(50), self.percentile(99)
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_ms": None if p50 is None else p50 * 1000.0,
            "p99_ms": None if p99 is None else p99 * 1000.0,
        }
        if self.shadow_compared or self.shadow_errors:
            out["shadow_requests"] = self.shadow_compared
            out["shadow_errors"] = self.shadow_errors
            out["shadow_agreement"] = (
                self.shadow_agreement / self.shadow_items if self.shadow_items else None
            )
        return out


RollbackHandler = Callable[[TrafficSplit, str, Mapping[str, Any]], None]


class Rollout:
    def __init__(
        self,
        registry: Registry,
        *,
        ttl_s: float,
        metrics: Metrics | None = None,
        on_rollback: RollbackHandler | None = None,
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.on_rollback = on_rollback
        self._splits: dict[tuple[str, str, str], TrafficSplit] = {}
        self._loaded_at = float("-inf")
        self._loading: asyncio.Future[None] | None = None
        self._stats: dict[int, dict[int, VersionStats]] = {}  # split id -> version -> stats
        self._ended: set[int] = set()  # splits rolled back here, before the registry says so
        self._shadows = 0
        self._tasks: set[asyncio.Task[None]] = set()
        registry.add_listener(self.invalidate)

    # -- the splits --------------------------------------------------------------------------

    def invalidate(self, model: str = "") -> None:
        """Read the splits again on the next request (a registry change was made)."""
        self._loaded_at = float("-inf")

    async def split_for(self, version: ModelVersion, reference: str) -> TrafficSplit | None:
        """The split whose alias `reference` named and resolved to `version`, if any."""
        if time.monotonic() - self._loaded_at >= self.ttl_s:
            await self._refresh()
        if not self._splits:
            return None
        ref = parse_reference(reference)
        if ref.version is not None:
            return None
        alias = ref.alias or DEFAULT_ALIAS
        split = self._splits.get((version.project, version.model, alias))
        if split is None or split.id in self._ended or split.baseline != version.version:
            return None
        return split

    async def _refresh(self) -> None:
        if self._loading is None:
            started = time.monotonic()

            async def load() -> None:
                splits = await asyncio.to_thread(self.registry.traffic.active, caller=SYSTEM)
                self._splits = {split.key: split for split in splits}
                live = {split.id for split in splits}
                for gone in set(self._stats) - live:
                    self._stats.pop(gone, None)
                self._ended &= live
                self._loaded_at = started

            self._loading = asyncio.ensure_future(load())
            self._loading.add_done_callback(lambda _: setattr(self, "_loading", None))
        await asyncio.shield(self._loading)

    # -- choosing ----------------------------------------------------------------------------

    def pick(self, split: TrafficSplit) -> int:
        """The version this request goes to: the request's earlier choice, else by the
        sticky header's hash, else at random, by weight."""
        routing = routing_var.get()
        if routing is not None and split.id in routing.chosen:
            return routing.chosen[split.id]
        value = routing.header(split.sticky) if routing is not None and split.sticky else None
        if value is not None:
            digest = hashlib.sha256(f"{split.id}\0{value}".encode()).digest()
            point = int.from_bytes(digest[:8], "big") / 2**64
        else:
            point = random.random()  # noqa: S311 (a traffic share, not a secret)
        number = _bucket(split.weights, point)
        if routing is not None:
            routing.chosen[split.id] = number
        return number

    async def route(
        self, version: ModelVersion, reference: str, task: str | None, router: ModelRouter
    ) -> tuple[ModelVersion, TrafficSplit | None]:
        """The version this request goes to, and the split that chose it (None: `version`
        as resolved, no split applies)."""
        split = await self.split_for(version, reference)
        if split is None:
            return version, None
        number = self.pick(split)
        if number != version.version:
            exact = f"{qualified(split.project, split.model)}:{number}"
            try:
                chosen = await router.resolve(exact, caller=SYSTEM)
            except NotFound:  # the candidate was deleted meanwhile: the baseline answers
                return version, None
            if task is None or chosen.task in get_task(task).servable_by():
                version = chosen
        return version, split

    # -- outcomes ----------------------------------------------------------------------------

    async def observe(self, split: TrafficSplit, version: ModelVersion, work: Awaitable[T]) -> T:
        """`await work`, timed and counted for `version` of `split`: a server error counts
        against it; an error the caller must fix (4xx) or a cancelled request does not."""
        started = time.perf_counter()
        try:
            result = await work
        except BaseException as exc:
            if not _client_error(exc):
                self.record(split, version.version, ok=False, seconds=0.0)
            raise
        self.record(split, version.version, ok=True, seconds=time.perf_counter() - started)
        return result

    def stats(self, split: TrafficSplit) -> dict[int, VersionStats]:
        return self._stats.setdefault(split.id, {})

    def record(self, split: TrafficSplit, version: int, *, ok: bool, seconds: float) -> None:
        """One request's outcome for `version` of `split`; may roll the split back."""
        stats = self.stats(split).setdefault(version, VersionStats())
        stats.requests += 1
        if ok:
            stats.latencies.append(seconds)
        else:
            stats.errors += 1
        if self.metrics is not None:
            label = str(version)
            outcome = "ok" if ok else "error"
            self.metrics.version_requests.labels(split.model, label, outcome).inc()
            if ok:
                self.metrics.version_seconds.labels(split.model, label).observe(seconds)
        if split.rollback is not None and split.id not in self._ended:
            verdict = self._verdict(split)
            if verdict is not None:
                self._roll_back(split, *verdict)

    def _verdict(self, split: TrafficSplit) -> tuple[str, dict[str, Any]] | None:
        policy = split.rollback
        assert policy is not None
        all_stats = self.stats(split)
        baseline = all_stats.get(split.baseline, VersionStats())
        for candidate in split.candidates:
            stats = all_stats.get(candidate)
            if stats is None or stats.requests < policy.min_requests:
                continue
            figures: dict[str, Any] = {
                "candidate": candidate,
                "baseline": split.baseline,
                "candidate_requests": stats.requests,
                "baseline_requests": baseline.requests,
                "candidate_error_rate": round(stats.error_rate, 6),
                "baseline_error_rate": round(baseline.error_rate, 6),
            }
            delta = stats.error_rate - baseline.error_rate
            limit = policy.max_error_rate_delta
            if limit is not None and delta > limit:
                return (
                    f"version {candidate}'s error rate {stats.error_rate:.2%} exceeds the "
                    f"baseline's {baseline.error_rate:.2%} by {delta:.2%}, over the limit of "
                    f"{limit:.2%} (max_error_rate_delta), after {stats.requests} requests",
                    figures,
                )
            ratio_limit = policy.max_p99_ratio
            if ratio_limit is None or stats.requests % P99_EVERY:
                continue
            p99, base_p99 = stats.percentile(99), baseline.percentile(99)
            if p99 is not None and base_p99:
                ratio = p99 / base_p99
                figures |= {
                    "candidate_p99_ms": round(p99 * 1000, 3),
                    "baseline_p99_ms": round(base_p99 * 1000, 3),
                }
                if ratio > ratio_limit:
                    return (
                        f"version {candidate}'s p99 latency {p99 * 1000:.1f} ms is "
                        f"{ratio:.2f}x the baseline's {base_p99 * 1000:.1f} ms, over the "
                        f"limit of {ratio_limit:g}x (max_p99_ratio), after {stats.requests} "
                        "requests",
                        figures,
                    )
        return None

    def _roll_back(self, split: TrafficSplit, reason: str, figures: dict[str, Any]) -> None:
        self._ended.add(split.id)  # no request goes to a candidate from now on
        log.warning("rolling back the traffic split of %s@%s: %s", split.model, split.alias, reason)
        if self.on_rollback is None:
            return
        summary = {str(v): s.summary() for v, s in self.stats(split).items()}
        handler = self.on_rollback

        async def end() -> None:
            try:
                await asyncio.to_thread(handler, split, reason, {**figures, "versions": summary})
            except Exception:
                log.exception("could not end the traffic split of %s", split.model)
            self.invalidate()

        self._spawn(end())

    # -- shadow ------------------------------------------------------------------------------

    def wants_shadow(self, split: TrafficSplit) -> bool:
        return (
            split.shadow is not None
            and self._shadows < MAX_SHADOW_RUNS
            and random.random() < split.shadow_share  # noqa: S311 (a share, not a secret)
        )

    def shadow(
        self,
        split: TrafficSplit,
        run: Callable[[], Awaitable[Sequence[Any]]],
        live: Sequence[Any],
    ) -> None:
        """Run `run()` (the shadow version's answer to the same request) after the response,
        at the background priority, and compare its results with `live`'s; nothing of it
        reaches the caller."""
        assert split.shadow is not None
        stats = self.stats(split).setdefault(split.shadow, VersionStats())
        self._shadows += 1

        async def mirror() -> None:
            token = background_work.set(True)
            try:
                results = await run()
            except Exception as exc:
                stats.shadow_errors += 1
                log.info("shadow version %s of %s failed: %s", split.shadow, split.model, exc)
                return
            finally:
                self._shadows -= 1
                background_work.reset(token)
            scores = agreement(live, results)
            stats.shadow_compared += 1
            stats.shadow_items += len(scores)
            stats.shadow_agreement += float(sum(scores))
            if self.metrics is not None:
                label = str(split.shadow)
                self.metrics.shadow_items.labels(split.model, label).inc(len(scores))
                self.metrics.shadow_agreement.labels(split.model, label).inc(float(sum(scores)))

        self._spawn(mirror())

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _client_error(exc: BaseException) -> bool:
    """Whether a failed request was the caller's to fix (a 4xx) or the caller went away."""
    if isinstance(exc, OpenMaaSError):
        return exc.status_code < 500
    return isinstance(exc, asyncio.CancelledError)


def _bucket(weights: Mapping[int, int], point: float) -> int:
    """The version whose share of the weights' total covers `point` in [0, 1)."""
    total = sum(weights.values())
    edge = 0.0
    last = next(iter(weights))
    for version, weight in weights.items():
        if weight <= 0:
            continue
        last = version
        edge += weight / total
        if point < edge:
            return version
    return last


def agreement(live: Sequence[Any], shadow: Sequence[Any]) -> list[float]:
    """Per item, how far the shadow's answer agrees with the live one: the cosine of two
    vectors (embeddings), else 1.0 when the top label (classification), the entities
    (tagging) or the answer itself is the same, 0.0 when not."""
    return [_agree(a, b) for a, b in zip(live, shadow, strict=False)]


def _agree(live: Any, shadow: Any) -> float:
    vector = _as_vector(live)
    if vector is not None:
        other = _as_vector(shadow)
        if other is None or other.shape != vector.shape:
            return 0.0
        norms = float(np.linalg.norm(vector) * np.linalg.norm(other))
        return float(vector @ other) / norms if norms else 0.0
    return 1.0 if _key(live) == _key(shadow) else 0.0


def _as_vector(value: Any) -> np.ndarray[Any, Any] | None:
    if isinstance(value, np.ndarray):
        return value.astype(np.float64).ravel()
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(x, float | int) and not isinstance(x, bool) for x in value)
    ):
        return np.asarray(value, dtype=np.float64)
    return None


def _key(value: Any) -> Any:
    """What must match: a ranked label list's top label; an entity's text, label and span."""
    if isinstance(value, list | tuple):
        first: Any = value[0] if value else None
        if hasattr(first, "score") and hasattr(first, "label") and not hasattr(first, "start"):
            return first.label  # ranked labels: the top one
        return tuple(_key(item) for item in value)
    if hasattr(value, "label") and hasattr(value, "start"):
        return (value.label, value.start, value.end)
    if hasattr(value, "label"):
        return value.label
    return value
