"""The response cache: bounded, keyed by version and normalized input, counted in metrics."""

from __future__ import annotations

import numpy as np

from openmaas.observability.metrics import Metrics
from openmaas.serving.cache import ResponseCache
from openmaas.tasks.text_input import normalize_text


def _cache(**limits: int) -> ResponseCache:
    return ResponseCache(
        max_entries=limits.get("max_entries", 100),
        max_bytes=limits.get("max_bytes", 1 << 20),
        metrics=Metrics(),
    )


def test_hit_after_put_and_miss_for_another_version() -> None:
    cache = _cache()
    vector = np.ones(4, dtype=np.float32)
    key_v1 = cache.key("p", "m", 1, "embedding", "", "hello")
    cache.put(key_v1, vector, size_bytes=vector.nbytes)
    assert cache.get(key_v1, "m", "embedding") is vector
    assert cache.get(cache.key("p", "m", 2, "embedding", "", "hello"), "m", "embedding") is None
    metrics = cache.metrics.render().decode()
    assert 'openmaas_cache_hits_total{model="m",task="embedding"} 1.0' in metrics
    assert 'openmaas_cache_misses_total{model="m",task="embedding"} 1.0' in metrics


def test_normalization_shares_entries_for_equivalent_text() -> None:
    assert normalize_text("  caf\u0065\u0301 ") == normalize_text("café")
    assert normalize_text("a b") != normalize_text("a  b")  # inner spacing is kept


def test_least_recently_used_entry_goes_first_when_full() -> None:
    cache = _cache(max_entries=2)
    keys = [cache.key("p", "m", 1, "embedding", "", t) for t in ("a", "b", "c")]
    cache.put(keys[0], "A", size_bytes=1)
    cache.put(keys[1], "B", size_bytes=1)
    assert cache.get(keys[0], "m", "embedding") == "A"  # a is now more recent than b
    cache.put(keys[2], "C", size_bytes=1)
    assert len(cache) == 2
    assert cache.get(keys[1], "m", "embedding") is None
    assert cache.get(keys[0], "m", "embedding") == "A"


def test_bytes_bound_and_oversized_values() -> None:
    cache = _cache(max_bytes=10_000)
    big = np.zeros(3_000, dtype=np.float32)  # 12 kB: larger than the whole cache
    cache.put(cache.key("p", "m", 1, "embedding", "", "big"), big, size_bytes=big.nbytes)
    assert len(cache) == 0
    small = np.zeros(1_000, dtype=np.float32)  # 4 kB each (+ overhead): two fit, not three
    for text in ("x", "y", "z"):
        cache.put(cache.key("p", "m", 1, "embedding", "", text), small, size_bytes=small.nbytes)
    assert len(cache) == 2
    assert cache.bytes <= 10_000


def test_disabled_cache_stores_nothing() -> None:
    cache = _cache(max_entries=0)
    key = cache.key("p", "m", 1, "embedding", "", "a")
    cache.put(key, "A", size_bytes=1)
    assert not cache.enabled
    assert len(cache) == 0
