"""Registry entities (models, versions, aliases, edits, checks, comparisons) as wire models."""

from __future__ import annotations

from openmaas.protocol.registry import (
    AliasEventOut,
    CompareOut,
    FileOut,
    FilesDiffOut,
    LineageOut,
    MetadataEditOut,
    ModelOut,
    VariantOut,
    VerifyOut,
    VerifyProblemOut,
    VersionOut,
)
from openmaas.registry.entities import (
    AliasEvent,
    MetadataEdit,
    ModelVersion,
    RegisteredModel,
    VerifyReport,
    VersionComparison,
)


def model_out(model: RegisteredModel) -> ModelOut:
    return ModelOut(
        name=model.name,
        description=model.description,
        tags=model.tags,
        latest_version=model.latest_version,
        aliases=model.aliases,
        created_at=model.created_at,
        updated_at=model.updated_at,
        created_by=model.created_by,
        project=model.project,
        public=model.public,
    )


def version_out(v: ModelVersion, served_by: str | None = None) -> VersionOut:
    """`served_by`: the runtime the loaded version runs on, when the caller knows (the
    engine's `served_by`)."""
    return VersionOut(
        model=v.model,
        version=v.version,
        task=v.task,
        runtime=v.runtime,
        format=v.format,
        status=v.status,
        description=v.description,
        tags=v.tags,
        params=v.params,
        metrics=v.metrics,
        lineage=LineageOut(**v.lineage.to_dict()),
        files=[FileOut(path=f.path, size=f.size, sha256=f.sha256) for f in v.files],
        storage=v.storage,
        size_bytes=v.size_bytes,
        aliases=list(v.aliases),
        created_at=v.created_at,
        created_by=v.created_by,
        project=v.project,
        public=v.public,
        variants=[
            VariantOut(
                kind=variant.kind,
                runtime=variant.runtime,
                metrics=variant.metrics,
                files=[FileOut(path=f.path, size=f.size, sha256=f.sha256) for f in variant.files],
                size_bytes=variant.size_bytes,
                job_id=variant.job_id,
                created_at=variant.created_at,
            )
            for variant in v.variants
        ],
        served_by=served_by,
    )


def alias_event_out(e: AliasEvent) -> AliasEventOut:
    return AliasEventOut(
        model=e.model,
        alias=e.alias,
        action=e.action,
        from_version=e.from_version,
        to_version=e.to_version,
        actor=e.actor,
        reason=e.reason,
        created_at=e.created_at,
        gate=dict(e.gate) if e.gate is not None else None,
    )


def metadata_edit_out(e: MetadataEdit) -> MetadataEditOut:
    return MetadataEditOut(
        model=e.model,
        version=e.version,
        before=e.before,
        after=e.after,
        actor=e.actor,
        created_at=e.created_at,
    )


def verify_out(r: VerifyReport) -> VerifyOut:
    return VerifyOut(
        model=r.model,
        version=r.version,
        ok=r.ok,
        files_checked=r.files_checked,
        problems=[VerifyProblemOut(path=p.path, problem=p.problem) for p in r.problems],
    )


def compare_out(c: VersionComparison) -> CompareOut:
    return CompareOut(
        model=c.model,
        a=c.a,
        b=c.b,
        fields=c.fields,
        metrics=c.metrics,
        params=c.params,
        files=FilesDiffOut(
            added=list(c.files_added),
            removed=list(c.files_removed),
            changed=list(c.files_changed),
            unchanged=c.files_unchanged,
        ),
        lineage=c.lineage,
    )
