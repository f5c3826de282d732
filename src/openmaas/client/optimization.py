"""Optimization jobs: a registered model exported to ONNX or quantized to int8, registered
as a new version with the deltas measured against its parent.

Example::

    job = client.create_optimization_job("all-minilm-l6-v2", "quantize")
    job = client.wait_for_optimization_job(job.id)
    print(job.optimized_model, job.metrics["throughput_speedup_batch32"])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openmaas.client.resource import Resource, segment, wait_until
from openmaas.protocol.optimization import (
    OptimizationJobCreate,
    OptimizationJobOut,
    OptimizationMethodOut,
)
from openmaas.protocol.training import PageOut, TrainingEventOut


class OptimizationResource(Resource):
    """`/v1/optimization/jobs`."""

    def list_optimization_methods(self) -> list[OptimizationMethodOut]:
        """The methods a job can run, with their settings' defaults."""
        return self._list("GET", "/v1/optimization/methods", OptimizationMethodOut)

    def create_optimization_job(
        self,
        model: str,
        method: str,
        *,
        settings: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        alias: str | None = None,
        eval_file: str | None = None,
        training_file: str | None = None,
    ) -> OptimizationJobOut:
        """Queue an optimization job (`onnx`, `quantize`, ...) of the registered `model`; on
        success it registers `model_name` (default `<model>-<method's suffix>`, e.g.
        `-onnx`, `-int8`). `eval_file` measures quality on labelled data; `training_file`
        is what a learning method (distillation) learns from."""
        body = OptimizationJobCreate(
            model=model,
            method=method,
            settings=dict(settings or {}),
            model_name=model_name,
            alias=alias,
            eval_file=eval_file,
            training_file=training_file,
        )
        payload = body.model_dump(mode="json", exclude_none=True)
        return self._one("POST", "/v1/optimization/jobs", OptimizationJobOut, json=payload)

    def list_optimization_jobs(
        self, *, after: str | None = None, limit: int = 20
    ) -> PageOut[OptimizationJobOut]:
        """Newest first; pass the last id as `after` for the next page."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        path = "/v1/optimization/jobs"
        return self._one("GET", path, PageOut[OptimizationJobOut], params=params)

    def get_optimization_job(self, job_id: str) -> OptimizationJobOut:
        return self._one("GET", _job_path(job_id), OptimizationJobOut)

    def cancel_optimization_job(self, job_id: str) -> OptimizationJobOut:
        return self._one("POST", f"{_job_path(job_id)}/cancel", OptimizationJobOut)

    def optimization_job_events(
        self, job_id: str, *, after: int | None = None, limit: int = 100
    ) -> PageOut[TrainingEventOut]:
        """Oldest first; pass the last id as `after` to follow the job."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        path = f"{_job_path(job_id)}/events"
        return self._one("GET", path, PageOut[TrainingEventOut], params=params)

    def wait_for_optimization_job(
        self, job_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None
    ) -> OptimizationJobOut:
        """Block until the job has finished (succeeded, failed or cancelled)."""
        return wait_until(
            lambda: self.get_optimization_job(job_id),
            lambda job: job.finished,
            lambda job: f"job {job_id} is still {job.status}",
            poll_s=poll_s,
            timeout_s=timeout_s,
        )


def _job_path(job_id: str) -> str:
    return f"/v1/optimization/jobs/{segment(job_id)}"
