"""Fast by default: every transformers encoder or classifier registered on a CPU server gets
an ONNX variant, built once by an `onnx` optimization job that the server queues itself.

The registration (any path: upload, register, the catalog, a training job's output) tells
`AutoOnnx` of the new version; when the `onnx` method applies to it and it is not itself an
optimization job's output (no export of an export, and no loop), one job is queued in the
version's project, created by `system:auto-onnx` (no caller's quota is charged; the audit
log names that actor). Its publish step stores the export as the version's variant
(`jobs.publish.VARIANT_OF`), which the serving pool then loads in place of the version's own
files (`serving.pool`). `OPENMAAS_AUTO_ONNX=false` turns it off.

Example::

    AutoOnnx.install(settings, registry, jobs, audit)  # the server's and each worker's
    registry.registration.register_plan("bert", plan, VersionSpec(), caller=principal)
    # -> an `onnx` job is queued for bert:1
"""

from __future__ import annotations

import logging
from typing import Any

from openmaas.auth.entities import SYSTEM
from openmaas.jobs.publish import VARIANT_OF
from openmaas.jobs.service import JobService
from openmaas.metering.audit import AuditLog
from openmaas.optimize.kind import OPTIMIZATION, OptimizationJobKind
from openmaas.optimize.onnx_methods import ONNX
from openmaas.optimize.registry import get_method
from openmaas.optimize.runner import SOURCE_TYPE
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion
from openmaas.settings import Settings

log = logging.getLogger(__name__)

AUTO_ONNX_ACTOR = "system:auto-onnx"


# What gets a variant: transformers encoders and classifiers (the `onnx` method also exports
# the platform's own networks, which are small and fast already).
RUNTIMES = frozenset({"transformers"})
TASKS = frozenset({"embedding", "text-classification"})


def wants_onnx_variant(version: ModelVersion) -> bool:
    """Whether a newly registered version gets an ONNX variant: a transformers embedding
    model or classifier the `onnx` method applies to, that no optimization job made."""
    return (
        version.runtime in RUNTIMES
        and version.task in TASKS
        and get_method(ONNX).applies_to(version)
        and version.lineage.source.get("type") != SOURCE_TYPE
    )


class AutoOnnx:
    """Queues the `onnx` variant job of each version it is told of (see the module)."""

    def __init__(self, jobs: JobService, audit: AuditLog | None) -> None:
        self.jobs = jobs
        self.audit = audit

    @classmethod
    def install(
        cls, settings: Settings, registry: Registry, jobs: JobService, audit: AuditLog | None
    ) -> None:
        """Have `registry`'s registrations queue variant jobs, when the settings want them:
        `auto_onnx` on a `cpu` server (the export is the CPU's fast path; a GPU serves the
        transformers graph fast enough, and the job would measure on the wrong device)."""
        if settings.auto_onnx and settings.device == "cpu":
            registry.registration.on_registered = cls(jobs, audit)

    def __call__(self, version: ModelVersion) -> None:
        if not wants_onnx_variant(version):
            return
        try:
            self.queue(version)
        except Exception:  # the version is registered; its variant is an extra
            log.exception(
                "could not queue the onnx variant job of %s:%s", version.model, version.version
            )

    def queue(self, version: ModelVersion) -> str:
        """Queue the job now; returns its id."""
        kind = self.jobs.kind(OPTIMIZATION)
        assert isinstance(kind, OptimizationJobKind), kind
        prepared = kind.prepare_variant(version, ONNX, actor=AUTO_ONNX_ACTOR)
        job = self.jobs.submit(prepared, caller=SYSTEM)
        if self.audit is not None:
            after: dict[str, Any] = {
                "kind": job.kind,
                "status": job.status.value,
                "recipe": job.recipe,
                "model_name": job.model_name,
                VARIANT_OF: f"{version.model}:{version.version}",
            }
            self.audit.record(
                AUTO_ONNX_ACTOR, version.project, "job.create", f"jobs/{job.id}", after=after
            )
        log.info("queued job %s: the onnx variant of %s:%s", job.id, version.model, version.version)
        return job.id
