"""The serving side of rollouts (`serving/rollout.py`), without a server: picking by weight and
by a sticky header, one choice per request, the automatic rollback's two rules (error rate
and p99), and how shadow answers are compared."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from openmaas.registry.traffic import RollbackPolicy, TrafficSplit
from openmaas.serving.rollout import Rollout, Routing, _bucket, agreement, routing_var
from openmaas.tasks.text_classification import LabelScore
from openmaas.tasks.token_classification import Entity


class _Registry:
    """What `Rollout` needs of the registry here: a listener hook (the splits are given)."""

    def add_listener(self, listener: Callable[[str], None]) -> None:
        pass


def _split(
    weights: Mapping[int, int],
    *,
    sticky: str | None = None,
    rollback: RollbackPolicy | None = None,
    split_id: int = 7,
) -> TrafficSplit:
    baseline = next(iter(weights))
    return TrafficSplit(
        id=split_id,
        project="default",
        model="m",
        alias="production",
        baseline=baseline,
        weights=dict(weights),
        sticky=sticky,
        shadow=None,
        shadow_share=1.0,
        rollback=rollback,
        created_by="test",
        created_at=datetime.now(UTC),
        candidates=tuple(v for v in weights if v != baseline),
    )


def _rollout(**kwargs: Any) -> Rollout:
    return Rollout(_Registry(), ttl_s=60.0, **kwargs)  # type: ignore[arg-type]


def test_buckets_follow_the_weights() -> None:
    weights = {1: 90, 2: 10}
    assert _bucket(weights, 0.0) == 1
    assert _bucket(weights, 0.8999) == 1
    assert _bucket(weights, 0.9) == 2
    assert _bucket(weights, 0.99999) == 2
    assert _bucket({1: 0, 2: 5}, 0.0) == 2  # a weight of 0 takes nothing


def test_random_picks_land_near_the_weights_and_a_request_picks_once() -> None:
    rollout = _rollout()
    split = _split({1: 70, 2: 30})
    picks = Counter(rollout.pick(split) for _ in range(20_000))
    assert abs(picks[2] / 20_000 - 0.30) < 0.02
    routing = Routing()
    token = routing_var.set(routing)
    try:
        first = rollout.pick(split)
        assert all(rollout.pick(split) == first for _ in range(50))
    finally:
        routing_var.reset(token)


def test_sticky_picks_depend_on_the_header_value_only() -> None:
    rollout = _rollout()
    split = _split({1: 50, 2: 50}, sticky="x-user-id")

    def pick_for(user: str) -> int:
        token = routing_var.set(Routing([(b"x-user-id", user.encode())]))
        try:
            return rollout.pick(split)
        finally:
            routing_var.reset(token)

    users = [f"user-{i}" for i in range(400)]
    first = {user: pick_for(user) for user in users}
    assert all(pick_for(user) == first[user] for user in users)
    assert abs(Counter(first.values())[2] / len(users) - 0.5) < 0.1
    # Another split spreads the same users afresh (its id is in the hash).
    other = _split({1: 50, 2: 50}, sticky="x-user-id", split_id=8)
    token = routing_var.set(Routing([(b"X-User-Id", b"user-1")]))
    try:
        assert rollout.pick(other) in (1, 2)  # the header's name matches in any case
    finally:
        routing_var.reset(token)


def _record(rollout: Rollout, split: TrafficSplit, version: int, n: int, **kw: Any) -> None:
    for _ in range(n):
        rollout.record(split, version, **kw)


def test_a_candidate_erring_more_than_allowed_is_rolled_back_after_min_requests() -> None:
    ended: list[tuple[str, Mapping[str, Any]]] = []

    async def run() -> None:
        rollout = _rollout(
            on_rollback=lambda split, reason, figures: ended.append((reason, figures))
        )
        policy = RollbackPolicy(max_error_rate_delta=0.05, min_requests=40)
        split = _split({1: 50, 2: 50}, rollback=policy)
        _record(rollout, split, 1, 100, ok=True, seconds=0.01)
        # 4 errors in 39 requests: 10%, but not yet judged.
        _record(rollout, split, 2, 35, ok=True, seconds=0.01)
        _record(rollout, split, 2, 4, ok=False, seconds=0.0)
        await asyncio.sleep(0)
        assert ended == []
        _record(rollout, split, 2, 1, ok=False, seconds=0.0)  # 5 of 40: 12.5% > 0% + 5%
        for _ in range(20):
            await asyncio.sleep(0.01)
            if ended:
                break
        [(reason, figures)] = ended
        assert "error rate 12.50% exceeds the baseline's 0.00%" in reason
        assert figures["candidate_requests"] == 40
        assert figures["versions"]["2"]["errors"] == 5

    asyncio.run(run())


def test_a_candidate_slower_than_allowed_is_rolled_back() -> None:
    ended: list[str] = []

    async def run() -> None:
        rollout = _rollout(on_rollback=lambda split, reason, figures: ended.append(reason))
        split = _split({1: 50, 2: 50}, rollback=RollbackPolicy(max_p99_ratio=1.5, min_requests=50))
        _record(rollout, split, 1, 100, ok=True, seconds=0.010)
        _record(rollout, split, 2, 49, ok=True, seconds=0.012)
        _record(rollout, split, 2, 1, ok=True, seconds=0.014)  # p99 1.4x: within bounds
        await asyncio.sleep(0.01)
        assert ended == []
        _record(rollout, split, 2, 10, ok=True, seconds=0.050)  # p99 now 5x the baseline's
        for _ in range(20):
            await asyncio.sleep(0.01)
            if ended:
                break
        assert len(ended) == 1
        assert "p99 latency" in ended[0]
        assert "(max_p99_ratio)" in ended[0]

    asyncio.run(run())


def test_shadow_agreement_is_top_label_entities_or_cosine() -> None:
    ranked = [[LabelScore("pos", 0.9), LabelScore("neg", 0.1)]]
    same_top = [[LabelScore("pos", 0.6), LabelScore("neg", 0.4)]]
    other_top = [[LabelScore("neg", 0.7), LabelScore("pos", 0.3)]]
    assert agreement(ranked, same_top) == [1.0]
    assert agreement(ranked, other_top) == [0.0]
    entities = [[Entity("Paris", "LOC", 0, 5, 0.9)]]
    assert agreement(entities, [[Entity("Paris", "LOC", 0, 5, 0.5)]]) == [1.0]
    assert agreement(entities, [[Entity("Paris", "PER", 0, 5, 0.9)]]) == [0.0]
    vectors = [np.array([1.0, 0.0]), np.array([0.0, 2.0])]
    shadow = [np.array([1.0, 1.0]), np.array([0.0, 1.0])]
    assert agreement(vectors, shadow) == pytest.approx([2**-0.5, 1.0])
