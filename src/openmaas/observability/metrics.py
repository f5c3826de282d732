"""Every Prometheus metric the server exports, on a registry of its own (no globals).

Example::

    metrics = Metrics()
    metrics.requests.labels(model="m", route="/v1/embeddings", status="2xx").inc()
    text = metrics.render()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "openmaas_requests",
            "HTTP requests by model, route and status class.",
            ["model", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "openmaas_request_duration_seconds",
            "HTTP request latency by model and route.",
            ["model", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "openmaas_batch_size", "Items per executed batch.", ["model"],
            buckets=SIZE_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_tokens = Histogram(
            "openmaas_batch_tokens", "Tokens per executed batch.", ["model"],
            buckets=TOKEN_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "openmaas_queue_depth", "Items waiting for a batch.", ["model"], registry=r
        )
        self.queue_wait_seconds = Histogram(
            "openmaas_queue_wait_seconds", "Time from queueing to batch start.", ["model"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "openmaas_batch_execution_seconds", "Batch execution time.", ["model", "outcome"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        # A poisoned item fails alone: its batch is run again item by item (serving/batcher.py).
        self.batch_splits = Counter(
            "openmaas_batch_splits",
            "Failed batches of several requests, run again one item at a time.",
            ["model"],
            registry=r,
        )
        self.model_loads = Counter(
            "openmaas_model_loads", "Model loads by outcome.", ["model", "outcome"], registry=r
        )
        self.model_load_seconds = Histogram(
            "openmaas_model_load_seconds", "Model load time.", ["model"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.model_unloads = Counter(
            "openmaas_model_unloads",
            "Models unloaded, by reason (evicted for memory, idle, requested).",
            ["model", "reason"],
            registry=r,
        )
        self.resident_bytes = Gauge(
            "openmaas_pool_resident_bytes", "Estimated memory of loaded models.", registry=r
        )
        self.loaded_models = Gauge("openmaas_pool_loaded_models", "Loaded models.", registry=r)
        self.cache_hits = Counter(
            "openmaas_cache_hits", "Response cache hits.", ["model", "task"], registry=r
        )
        self.cache_misses = Counter(
            "openmaas_cache_misses", "Response cache misses.", ["model", "task"], registry=r
        )
        self.cache_entries = Gauge("openmaas_cache_entries", "Response cache entries.", registry=r)
        self.cache_bytes = Gauge("openmaas_cache_bytes", "Response cache size.", registry=r)
        # Rollouts: what each version of a split alias did, and shadow comparisons.
        self.version_requests = Counter(
            "openmaas_version_requests",
            "Requests to a version of a split alias (traffic split), by outcome (ok, error).",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.version_seconds = Histogram(
            "openmaas_version_request_duration_seconds",
            "Latency of the answered requests of a version of a split alias.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.shadow_items = Counter(
            "openmaas_shadow_items",
            "Items answered by a shadow version and compared with the live answer.",
            ["model", "version"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "openmaas_shadow_agreement",
            "Sum over compared items of the shadow's agreement with the live answer (1 for "
            "the same label or entities, the cosine for embeddings); divide by "
            "openmaas_shadow_items.",
            ["model", "version"],
            registry=r,
        )
        # Issue 13 (brute-force guard): how many presented keys were checked, and how many
        # the guard refused unchecked.
        self.auth_attempts = Counter(
            "openmaas_auth_attempts",
            "API keys not in the cache, by outcome: checked and valid, checked and invalid "
            "(concurrent requests with one key share one check), or refused unchecked (the "
            "address is blocked).",
            ["outcome"],
            registry=r,
        )

        # Tokens by model: a text generation request's prompt and completion, every other
        # task's input (embeddings, classification, ...), as metered (api/metering.py).
        self.prompt_tokens = Counter(
            "openmaas_prompt_tokens",
            "Prompt tokens of answered text generation requests, by model.",
            ["model"],
            registry=r,
        )
        self.completion_tokens = Counter(
            "openmaas_completion_tokens",
            "Tokens generated for answered text generation requests, by model.",
            ["model"],
            registry=r,
        )
        self.input_tokens = Counter(
            "openmaas_input_tokens",
            "Input tokens of answered requests of every other task (embeddings, "
            "classification, ...), by model.",
            ["model"],
            registry=r,
        )
        self._token_series: dict[str, tuple[Counter, Counter, Counter]] = {}
        self.build_info = Gauge(
            "openmaas_build_info",
            "Always 1; what this server is built from, in its labels.",
            ["version", "git_sha", "python", "torch"],
            registry=r,
        )
        # The process's CPU, memory, file descriptors and start time, the interpreter's
        # version and its garbage collector: what prometheus_client's default registry has.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)

    def count_tokens(self, model: str, inputs: int, outputs: int, *, generation: bool) -> None:
        """A request's metered tokens (`generation`: a text generation's prompt and
        completion; otherwise input tokens)."""
        # `labels()` validates and locks on every call: each model's series, looked up once.
        series = self._token_series.get(model)
        if series is None:
            series = self._token_series[model] = (
                self.prompt_tokens.labels(model=model),
                self.completion_tokens.labels(model=model),
                self.input_tokens.labels(model=model),
            )
        if generation:
            series[0].inc(inputs)
            series[1].inc(outputs)
        elif inputs:
            series[2].inc(inputs)

    def describe_build(self, labels: Mapping[str, str]) -> None:
        self.build_info.labels(**labels).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def batch_observer(self, model: str) -> ModelBatchMetrics:
        return ModelBatchMetrics(self, model)


class ModelBatchMetrics:
    """The batcher's observer for one model."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._depth = metrics.queue_depth.labels(model=model)
        self._size = metrics.batch_size.labels(model=model)
        self._tokens = metrics.batch_tokens.labels(model=model)
        self._wait = metrics.queue_wait_seconds.labels(model=model)
        self._ok = metrics.batch_seconds.labels(model=model, outcome="ok")
        self._failed = metrics.batch_seconds.labels(model=model, outcome="error")
        self._splits = metrics.batch_splits.labels(model=model)

    def queue_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def batch_started(self, size: int, tokens: int, waits_s: Sequence[float]) -> None:
        self._size.observe(size)
        self._tokens.observe(tokens)
        for wait in waits_s:
            self._wait.observe(wait)

    def batch_finished(self, seconds: float, ok: bool) -> None:
        (self._ok if ok else self._failed).observe(seconds)

    def batch_split(self, size: int) -> None:
        self._splits.inc()
