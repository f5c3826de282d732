"""Admin API for the model registry: models, versions, aliases, compare, verify.

Each route validates, makes one registry call as the authenticated caller (who may see
which model is decided there) and shapes the answer. Every change that succeeds is recorded
once in the audit log, with the state before and after it; a request that changes nothing
records nothing. Targets read `models/<name>`, `models/<name>/versions/<n>` and
`models/<name>/aliases/<alias>`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile, status
from pydantic import BaseModel, ConfigDict, ValidationError

from openmaas.api.admin.rollout import audit_split_ended, split_before
from openmaas.api.auditor import Auditor, AuditorDep
from openmaas.api.convert.registry import (
    alias_event_out,
    compare_out,
    metadata_edit_out,
    model_out,
    verify_out,
    version_out,
)
from openmaas.api.deps import EngineDep, PrincipalDep, RegistryDep, caller, requires
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.params import ModelPath, VersionPath
from openmaas.auth.scopes import Scope
from openmaas.errors import InvalidRequest
from openmaas.protocol.common import MAX_ROW_ID, ListOut
from openmaas.protocol.registry import (
    AliasEventOut,
    AliasMoveOut,
    AliasRequest,
    CompareOut,
    MetadataEditOut,
    MetadataPatch,
    ModelOut,
    ReasonRequest,
    RegisterRequest,
    VerifyOut,
    VersionMetadata,
    VersionOut,
)
from openmaas.registry.entities import (
    AliasEvent,
    FileEntry,
    Lineage,
    ModelVersion,
    RegisteredModel,
)
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import SourceRef
from openmaas.registry.text_vectors import register_text_vectors
from openmaas.serving.engine import version_key

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/registry",
    tags=["registry"],
    dependencies=[Depends(caller)],
)


def _spec(meta: VersionMetadata) -> VersionSpec:
    # Project and author come from the caller, inside the registry.
    return VersionSpec(
        task=meta.task,
        runtime=meta.runtime,
        format=meta.format,
        description=meta.description,
        tags=meta.tags,
        params=meta.params,
        metrics=meta.metrics,
        lineage=Lineage(**meta.lineage.model_dump()),
        alias=meta.alias,
    )


class VisibilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public: bool


# -- audit: targets and the state recorded before and after ----------------------------------


def _model_target(name: str) -> str:
    return f"models/{name}"


def _version_target(name: str, version: int) -> str:
    return f"models/{name}/versions/{version}"


def _alias_target(name: str, alias: str) -> str:
    return f"models/{name}/aliases/{alias}"


def _model_state(model: RegisteredModel) -> dict[str, Any]:
    return {
        "description": model.description,
        "tags": model.tags,
        "latest_version": model.latest_version,
        "aliases": model.aliases,
    }


def _manifest_sha256(files: tuple[FileEntry, ...]) -> str:
    """One digest for every file of a version (sha256sum's lines, sorted by path)."""
    lines = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode()).hexdigest()


def _version_state(v: ModelVersion) -> dict[str, Any]:
    return {
        "task": v.task,
        "runtime": v.runtime,
        "format": v.format,
        "description": v.description,
        "tags": v.tags,
        "aliases": list(v.aliases),
        "storage": v.storage,
        "size_bytes": v.size_bytes,
        "files": len(v.files),
        "manifest_sha256": _manifest_sha256(v.files),
        "source": v.lineage.source,
    }


def _edited(state: RegisteredModel | ModelVersion, body: MetadataPatch) -> dict[str, Any]:
    """The fields the patch names, as they stand in `state`."""
    return {
        field: getattr(state, field)
        for field in ("description", "tags")
        if field in body.model_fields_set
    }


def _audit_edit(
    auditor: Auditor,
    action: str,
    target: str,
    before: RegisteredModel | ModelVersion,
    after: RegisteredModel | ModelVersion,
    body: MetadataPatch,
) -> None:
    old, new = _edited(before, body), _edited(after, body)
    if old != new:  # an edit that changes nothing records nothing
        auditor.record(action, target, before=old, after=new)


def _alias_states(event: AliasEvent, reason: str) -> tuple[dict[str, Any], dict[str, Any]]:
    # Alias actions always carry both sides; a null version means no alias.
    return {"version": event.from_version}, {"version": event.to_version, "reason": reason}


@router.get("/models")
def list_models(registry: RegistryDep, who: PrincipalDep) -> ListOut[ModelOut]:
    return ListOut(data=[model_out(m) for m in registry.list_models(caller=who)])


@router.get("/models/{name}")
def get_model(name: ModelPath, registry: RegistryDep, who: PrincipalDep) -> ModelOut:
    return model_out(registry.get_model(name, caller=who))


@router.patch("/models/{name}")
def update_model(
    name: ModelPath,
    body: MetadataPatch,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> ModelOut:
    before = registry.get_model(name, caller=who)
    model = registry.store.update_model(
        name, description=body.description, tags=body.tags, caller=who
    )
    _audit_edit(auditor, "model.update", _model_target(name), before, model, body)
    return model_out(model)


@router.delete("/models/{name}")
def delete_model(
    name: ModelPath, registry: RegistryDep, who: PrincipalDep, auditor: AuditorDep
) -> dict[str, object]:
    before = {
        **_model_state(registry.get_model(name, caller=who)),
        "versions": [v.version for v in registry.store.list_versions(name, caller=who)],
    }
    registry.store.delete_model(name, caller=who)
    auditor.record("model.delete", _model_target(name), before=before)
    return {"object": "registered_model", "name": name, "deleted": True}


@router.get("/models/{name}/history")
def model_metadata_history(
    name: ModelPath, registry: RegistryDep, who: PrincipalDep
) -> ListOut[MetadataEditOut]:
    edits = registry.store.metadata_history(name, caller=who)
    return ListOut(data=[metadata_edit_out(e) for e in edits])


def audit_registration(auditor: Auditor, version: ModelVersion, alias: str | None) -> None:
    # An alias set at registration is part of this one action, not an alias.set of its own.
    after = {**_version_state(version), "alias": alias}
    auditor.record("version.register", _version_target(version.model, version.version), after=after)


@router.post("/models/{name}/versions", status_code=status.HTTP_201_CREATED)
def register_version(
    name: ModelPath,
    body: RegisterRequest,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> VersionOut:
    source = SourceRef(**body.source.model_dump())
    version = registry.registration.register_source(name, source, _spec(body), caller=who)
    audit_registration(auditor, version, body.alias)
    return version_out(version)


@router.post("/models/{name}/versions/upload", status_code=status.HTTP_201_CREATED)
def upload_version(
    name: ModelPath,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    file: Annotated[UploadFile, File(description="The model directory as a .tar.gz archive.")],
    metadata: Annotated[
        str, Form(description="JSON object with the fields of VersionMetadata.")
    ] = "{}",
) -> VersionOut:
    meta = _upload_metadata(metadata)
    source = {"type": "upload", "filename": file.filename or ""}
    version = registry.registration.register_archive(
        name, file.file, _spec(meta), caller=who, source=source
    )
    audit_registration(auditor, version, meta.alias)
    return version_out(version)


@router.post("/models/{name}/versions/word_vectors", status_code=status.HTTP_201_CREATED)
def import_word_vectors(
    name: ModelPath,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    file: Annotated[UploadFile, File(description="Word vectors in word2vec or GloVe text format.")],
    metadata: Annotated[
        str, Form(description="JSON object with the fields of VersionMetadata.")
    ] = "{}",
) -> VersionOut:
    """Register word vectors from a text file: served on /v1/embeddings, and the starting
    `embeddings` of networks trained from scratch."""
    meta = _upload_metadata(metadata)
    version = register_text_vectors(
        registry.registration,
        name,
        file.file,
        _spec(meta),
        caller=who,
        filename=file.filename or "",
    )
    audit_registration(auditor, version, meta.alias)
    return version_out(version)


def _upload_metadata(metadata: str) -> VersionMetadata:
    try:
        return VersionMetadata.model_validate(json.loads(metadata))
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"metadata is not valid JSON: {exc.msg}", param="metadata") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"metadata.{where}: {first['msg']}", param="metadata") from None


@router.get("/models/{name}/versions")
def list_versions(
    name: ModelPath, registry: RegistryDep, engine: EngineDep, who: PrincipalDep
) -> ListOut[VersionOut]:
    versions = registry.store.list_versions(name, caller=who)
    return ListOut(data=[version_out(v, engine.pool.served_by(version_key(v))) for v in versions])


@router.get("/models/{name}/versions/{version}")
def get_version(
    name: ModelPath,
    version: VersionPath,
    registry: RegistryDep,
    engine: EngineDep,
    who: PrincipalDep,
) -> VersionOut:
    found = registry.get_version(name, version, caller=who)
    return version_out(found, engine.pool.served_by(version_key(found)))


@router.patch("/models/{name}/versions/{version}")
def update_version(
    name: ModelPath,
    version: VersionPath,
    body: MetadataPatch,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> VersionOut:
    before = registry.get_version(name, version, caller=who)
    updated = registry.store.update_version(
        name, version, description=body.description, tags=body.tags, caller=who
    )
    _audit_edit(auditor, "version.update", _version_target(name, version), before, updated, body)
    return version_out(updated)


@router.delete("/models/{name}/versions/{version}")
def delete_version(
    name: ModelPath,
    version: VersionPath,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> dict[str, object]:
    before = _version_state(registry.get_version(name, version, caller=who))
    registry.store.delete_version(name, version, caller=who)
    auditor.record("version.delete", _version_target(name, version), before=before)
    return {"object": "model_version", "model": name, "version": version, "deleted": True}


@router.get("/models/{name}/versions/{version}/history")
def version_metadata_history(
    name: ModelPath, version: VersionPath, registry: RegistryDep, who: PrincipalDep
) -> ListOut[MetadataEditOut]:
    edits = registry.store.metadata_history(name, version, caller=who)
    return ListOut(data=[metadata_edit_out(e) for e in edits])


@router.post("/models/{name}/versions/{version}/verify")
def verify_version(
    name: ModelPath, version: VersionPath, registry: RegistryDep, who: PrincipalDep
) -> VerifyOut:
    return verify_out(registry.files.verify(name, version, caller=who))


@router.get("/models/{name}/compare")
def compare_versions(
    name: ModelPath,
    registry: RegistryDep,
    who: PrincipalDep,
    a: Annotated[int, Query(ge=1, le=MAX_ROW_ID, description="First version.")],
    b: Annotated[int, Query(ge=1, le=MAX_ROW_ID, description="Second version.")],
) -> CompareOut:
    return compare_out(registry.store.compare(name, a, b, caller=who))


@router.get("/models/{name}/aliases")
def list_aliases(name: ModelPath, registry: RegistryDep, who: PrincipalDep) -> dict[str, int]:
    return registry.get_model(name, caller=who).aliases


@router.get("/models/{name}/aliases/history")
def all_alias_history(
    name: ModelPath, registry: RegistryDep, who: PrincipalDep
) -> ListOut[AliasEventOut]:
    events = registry.aliases.history(name, caller=who)
    return ListOut(data=[alias_event_out(e) for e in events])


@router.put("/models/{name}/aliases/{alias}")
def set_alias(
    name: ModelPath,
    alias: str,
    body: AliasRequest,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> AliasMoveOut:
    split = split_before(registry, name, alias, who)
    event = registry.aliases.move(
        name, alias, body.version, caller=who, reason=body.reason, force=body.force
    )
    if event is not None:  # None: it already pointed there, nothing changed
        before, after = _alias_states(event, body.reason)
        if event.gate is not None:  # the evaluation gate's scores, or that it was forced
            after = {**after, "gate": dict(event.gate)}
        auditor.record("alias.set", _alias_target(name, alias), before=before, after=after)
        audit_split_ended(auditor, name, alias, split, f"alias moved to {body.version}")
    return AliasMoveOut(
        model=name,
        alias=alias,
        version=body.version,
        event=alias_event_out(event) if event else None,
    )


@router.delete("/models/{name}/aliases/{alias}")
def delete_alias(
    name: ModelPath,
    alias: str,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    reason: Annotated[str, Query(max_length=2_000)] = "",
) -> AliasMoveOut:
    split = split_before(registry, name, alias, who)
    event = registry.aliases.delete(name, alias, caller=who, reason=reason)
    before, after = _alias_states(event, reason)
    auditor.record("alias.delete", _alias_target(name, alias), before=before, after=after)
    audit_split_ended(auditor, name, alias, split, "alias deleted")
    return AliasMoveOut(model=name, alias=alias, version=None, event=alias_event_out(event))


@router.get("/models/{name}/aliases/{alias}/history")
def alias_history(
    name: ModelPath, alias: str, registry: RegistryDep, who: PrincipalDep
) -> ListOut[AliasEventOut]:
    events = registry.aliases.history(name, alias, caller=who)
    return ListOut(data=[alias_event_out(e) for e in events])


@router.post("/models/{name}/aliases/{alias}/rollback")
def rollback_alias(
    name: ModelPath,
    alias: str,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
    body: ReasonRequest | None = None,
) -> AliasMoveOut:
    reason = body.reason if body else ""
    split = split_before(registry, name, alias, who)
    event = registry.aliases.rollback(name, alias, caller=who, reason=reason)
    before, after = _alias_states(event, reason)
    auditor.record("alias.rollback", _alias_target(name, alias), before=before, after=after)
    audit_split_ended(auditor, name, alias, split, f"alias rolled back to {event.to_version}")
    return AliasMoveOut(
        model=name,
        alias=alias,
        version=event.to_version,
        event=alias_event_out(event),
    )


@router.put("/models/{name}/public", dependencies=[Depends(requires(Scope.ADMIN))])
def set_public(
    name: ModelPath,
    body: VisibilityRequest,
    registry: RegistryDep,
    who: PrincipalDep,
    auditor: AuditorDep,
) -> ModelOut:
    """Make a model visible to (and callable by) every project, or only its own (admin)."""
    before, after = registry.store.set_public(name, body.public, caller=who)
    if before != after:
        auditor.record(
            "model.visibility",
            _model_target(name),
            before={"public": before},
            after={"public": after},
        )
    return model_out(registry.get_model(name, caller=who))


@router.get("/resolve")
def resolve_reference(
    registry: RegistryDep,
    who: PrincipalDep,
    engine: EngineDep,
    ref: Annotated[str, Query(description="name, name@alias or name:version", max_length=256)],
) -> VersionOut:
    found = registry.resolve(ref, caller=who)
    return version_out(found, engine.pool.served_by(version_key(found)))
