"""Wire shapes of rollouts: an alias's traffic split (weights, sticky, shadow, automatic
rollback) and what each of its versions did, shared by the server and the Python SDK.

Example::

    body = TrafficRequest(versions={"1": 90, "2": 10}, sticky="x-user-id",
                          rollback=RollbackIn(max_error_rate_delta=0.02, min_requests=200))
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from openmaas.protocol.common import MAX_ROW_ID, Response, Schema

VersionNumber = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,18}$", max_length=19)]


class RollbackIn(Schema):
    max_error_rate_delta: float | None = Field(default=None, ge=0, le=1)
    max_p99_ratio: float | None = Field(default=None, ge=1, le=1000)
    min_requests: int = Field(default=200, ge=1, le=10_000_000)


class TrafficRequest(Schema):
    versions: dict[VersionNumber, int] = Field(
        description='Version -> weight, e.g. {"1": 90, "2": 10}; the alias\'s own version '
        "(the baseline) must be one of them.",
        min_length=2,
        max_length=10,
    )
    sticky: str | None = Field(
        default=None,
        max_length=128,
        description="A request header (e.g. x-user-id) whose value keeps a user on one version.",
    )
    shadow: Annotated[int, Field(ge=1, le=MAX_ROW_ID)] | None = Field(
        default=None, description="A version that gets a mirror of the requests (not returned)."
    )
    shadow_share: float = Field(default=1.0, gt=0, le=1)
    rollback: RollbackIn | None = None
    reason: str = Field(default="", max_length=2_000)


class VersionStatsOut(Response):
    """What one version of the split did since the split started, on the server answering."""

    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    shadow_requests: int | None = None
    shadow_errors: int | None = None
    shadow_agreement: float | None = None


class TrafficOut(Response):
    object: Literal["traffic_split"] = "traffic_split"
    model: str
    alias: str
    baseline: int  # the alias's own version
    versions: dict[str, int]  # version -> weight
    sticky: str | None = None
    shadow: int | None = None
    shadow_share: float = 1.0
    rollback: dict[str, Any] | None = None
    created_by: str
    created_at: datetime
    # Per version (live and shadow), since the split started, on the server that answered.
    stats: dict[str, VersionStatsOut] = Field(default_factory=dict)


class PolicyRequest(Schema):
    eval_file: str = Field(min_length=1, max_length=64, description="A labelled file id.")
    metric: str = Field(
        default="macro_f1",
        max_length=64,
        description="accuracy, macro_f1, micro_f1, weighted_f1, macro_precision, "
        "macro_recall (classifiers); entity_f1, entity_precision, entity_recall, "
        "token_accuracy (taggers). Higher is better.",
    )
    min_delta: float = Field(default=0.0, ge=-1, le=1)
    reason: str = Field(default="", max_length=2_000)


class PolicyOut(Response):
    object: Literal["alias_policy"] = "alias_policy"
    model: str
    alias: str
    eval_file: str
    metric: str
    min_delta: float
    created_by: str
    created_at: datetime
