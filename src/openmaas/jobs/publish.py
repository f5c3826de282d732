"""Publishing a job's result: a new version of the job's model, with lineage, and the alias
the job asked for moved to it. A kind whose run registers no model (a batch writes files)
returns a `JobResult` instead, and nothing is published. A job whose options name a version
in `VARIANT_OF` (the ONNX export the server builds of each new encoder) stores its output as
that version's variant instead: no new version, no alias.

A worker that died between registering and recording success left a version whose lineage
names the job: publishing again returns that version instead of registering a second one.

Example::

    output = kind.run(context)
    name, note = publish(registry, job, output)  # "sst2-1a2b3c4d" (or "name:3"), None
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.errors import GateFailed, NotFound
from openmaas.jobs.context import finite
from openmaas.jobs.entities import Job
from openmaas.protocol.common import parse_decimal
from openmaas.registry.composition import Registry
from openmaas.registry.entities import Lineage, ModelVersion, VersionPin
from openmaas.registry.names import check_model_name, qualified
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.registry.variants import VariantSpec

# A job option: store the output as a variant of this version (`VersionPin.to_dict()`), of
# the kind the job's recipe names, instead of registering a new version.
VARIANT_OF = "variant_of"


@dataclass(frozen=True, slots=True)
class JobOutput:
    """What a kind's run produced: a servable model directory (copied into the artifact
    store by the registration) and what to record with it."""

    directory: Path
    task: str
    runtime: str
    description: str
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    trained_tokens: int | None = None
    source: Mapping[str, Any] = field(default_factory=dict)  # lineage: where it came from
    base_version: str | None = None  # "name:version" it was derived from, if any
    transform: str = "train"  # lineage: train | fine-tune | ...
    dataset_id: str | None = None
    dataset_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a kind's run produced when it registers no model: the line the job's success
    event says, and metrics recorded with the job."""

    message: str
    metrics: Mapping[str, float] = field(default_factory=dict)


def publish(registry: Registry, job: Job, output: JobOutput) -> tuple[str, str | None]:
    """Register `output` as the next version of the job's model; returns the name the job
    reports (`name:version` when the caller named the model, else the new model's name),
    and what its last event says when that is not simply `registered <name>` (the job's
    `alias` has an evaluation gate that refused the new version: it stays registered)."""
    if job.options.get(VARIANT_OF) is not None:
        return publish_variant(registry, job, output)
    # As the server: the job's project was checked when it was created, and the spec
    # records that project as the version's owner.
    note = None
    try:
        version = registered_by(registry, job) or registry.registration.register_plan(
            qualified(job.project, job.model_name),
            plan_directory(output.directory),
            _spec(job, output),
            caller=SYSTEM,
        )
    except GateFailed as refused:
        found = registered_by(registry, job)
        if found is None:
            raise
        version, note = found, refused.message
    explicit = bool(job.options.get("explicit_model_name"))
    name = f"{version.model}:{version.version}" if explicit else version.model
    return name, note


def publish_variant(registry: Registry, job: Job, output: JobOutput) -> tuple[str, str]:
    """Store `output` as the variant of the version the job's `VARIANT_OF` pins; returns
    that version's `name:version` (what the variant serves) and the job's last event."""
    pin = VersionPin.from_dict(dict(job.options[VARIANT_OF]))
    spec = VariantSpec(
        kind=job.recipe,
        runtime=output.runtime,
        job_id=job.id,
        params=dict(output.params),
        settings=dict(job.hyperparameters),
        metrics=finite(output.metrics),
    )
    registry.variants.add(pin, spec, output.directory, caller=SYSTEM)
    return pin.reference, f"stored as the {job.recipe} variant of {pin.reference}"


def check_publishable_name(registry: Registry, name: str, project: str, caller: Principal) -> None:
    """Refuse now a name a job of `caller` could not publish into, with registration's
    answers: a tenant publishes into its own project's private models (new or existing); a
    public model or a catalog name is read-only to it. Names are each project's own, so
    another project's hidden model of that name is no obstacle."""
    check_model_name(name)
    registry.registration.check_target(name, VersionSpec(project=project), caller)


def registered_by(registry: Registry, job: Job) -> ModelVersion | None:
    """The version a previous run of `job` registered, if one did."""
    try:
        versions = registry.store.list_versions(
            qualified(job.project, job.model_name), caller=SYSTEM
        )
    except NotFound:
        return None
    return next((v for v in versions if v.lineage.job_id == job.id), None)


def _spec(job: Job, output: JobOutput) -> VersionSpec:
    lineage = Lineage(
        source=dict(output.source),
        parent_version=_parent_version(job.model_name, output.base_version),
        transform=output.transform,
        dataset_id=output.dataset_id,
        dataset_sha256=output.dataset_sha256,
        job_id=job.id,
    )
    return VersionSpec(
        task=output.task,
        runtime=output.runtime,
        description=output.description,
        params=dict(output.params),
        metrics=finite(output.metrics),
        lineage=lineage,
        alias=job.alias,
        created_by=job.created_by,
        project=job.project,
    )


def _parent_version(model_name: str, base: str | None) -> int | None:
    if base is None:
        return None
    name, _, version = base.rpartition(":")
    return parse_decimal(version) if name == model_name else None
