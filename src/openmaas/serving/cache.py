"""Response cache for deterministic tasks, one entry per input item.

Keys are (project, model, version, task, options, normalized input): a new version never sees
an old version's results, and a project never sees another's (a hit answers faster than a
miss, which would tell one tenant what another had sent). Bounded by entries and by bytes;
least recently used entries go first. Only the event loop thread touches it, so it needs no
lock.

Example::

    cache = ResponseCache(max_entries=10_000, max_bytes=64 << 20, metrics=metrics)
    key = cache.key("acme", "all-minilm-l6-v2", 1, "embedding", "", text)
    if (hit := cache.get(key, "all-minilm-l6-v2", "embedding")) is None:
        cache.put(key, vector, size_bytes=vector.nbytes)
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from prometheus_client import Counter

from openmaas.observability.metrics import Metrics

CacheKey = bytes

# Per-entry bookkeeping beyond the value itself (key bytes, dict slot, tuple).
_ENTRY_OVERHEAD_BYTES = 200


class ResponseCache:
    def __init__(self, *, max_entries: int, max_bytes: int, metrics: Metrics) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._entries: OrderedDict[CacheKey, tuple[Any, int]] = OrderedDict()
        self.bytes = 0
        # (model, task) -> its (hits, misses) counters: `labels()` costs more than a lookup.
        self._counters: dict[tuple[str, str], tuple[Counter, Counter]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(project: str, model: str, version: int, task: str, options: str, text: str) -> CacheKey:
        digest = hashlib.blake2b(digest_size=20)
        for part in (project, model, str(version), task, options, text):
            digest.update(part.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
        return digest.digest()

    def get(self, key: CacheKey, model: str, task: str) -> Any | None:
        entry = self._entries.get(key)
        hits, misses = self._counters_for(model, task)
        if entry is None:
            misses.inc()
            return None
        self._entries.move_to_end(key)
        hits.inc()
        return entry[0]

    def _counters_for(self, model: str, task: str) -> tuple[Counter, Counter]:
        counters = self._counters.get((model, task))
        if counters is None:
            counters = (
                self.metrics.cache_hits.labels(model=model, task=task),
                self.metrics.cache_misses.labels(model=model, task=task),
            )
            self._counters[(model, task)] = counters
        return counters

    def put(self, key: CacheKey, value: Any, *, size_bytes: int) -> None:
        size = size_bytes + _ENTRY_OVERHEAD_BYTES
        if not self.enabled or size > self.max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.bytes -= previous[1]
        self._entries[key] = (value, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
        self.metrics.cache_entries.set(len(self._entries))
        self.metrics.cache_bytes.set(self.bytes)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
        self.metrics.cache_entries.set(0)
        self.metrics.cache_bytes.set(0)
