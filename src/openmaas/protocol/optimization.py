"""Wire shapes of `/v1/optimization/jobs`, shared by the server and the Python SDK.

Example::

    body = OptimizationJobCreate(model="all-minilm-l6-v2", method="quantize")
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from openmaas.protocol.common import Response


class OptimizationJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, description="The parent: a reference.")
    method: str = Field(
        min_length=1,
        max_length=32,
        description="onnx | quantize | ... (GET /v1/optimization/methods)",
    )
    settings: dict[str, Any] = Field(default_factory=dict)
    model_name: str | None = Field(
        default=None,
        max_length=128,
        description="Register as this model's next version (default: the parent's name "
        "with -onnx or -int8).",
    )
    alias: str | None = Field(default=None, max_length=64, description="Moved on success.")
    eval_file: str | None = Field(
        default=None,
        max_length=64,
        description="A labelled file (id) to measure quality on, beside the parent.",
    )
    training_file: str | None = Field(
        default=None,
        max_length=64,
        description="The file (id) a method learns from (distill; prune's fine-tune).",
    )


class OptimizationJobOut(Response):
    id: str
    object: Literal["optimization.job"] = "optimization.job"
    project: str
    created_by: str
    status: str
    method: str
    task: str
    model: str  # the parent reference as given
    parent_version: str | None = None  # "name:version" it was pinned to
    settings: dict[str, Any]
    model_name: str
    alias: str | None = None
    eval_file: str | None = None
    training_file: str | None = None
    optimized_model: str | None = None  # what it registered
    # The server's own export of a new version (`OPENMAAS_AUTO_ONNX`): the `name:version`
    # whose variant it builds, stored beside that version rather than registered.
    variant_of: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    attempts: int = 0
    worker_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class OptimizationMethodOut(Response):
    """A method an optimization job can run: what it does, its settings and their defaults,
    and the models it applies to."""

    name: str
    object: Literal["optimization.method"] = "optimization.method"
    summary: str
    settings: dict[str, Any]  # each setting's default
    runtimes: list[str]  # the parent runtimes it starts from
    tasks: list[str]  # the parent tasks it applies to
    needs_training_file: bool = False
