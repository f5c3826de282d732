"""Admin API for the model registry: models, versions, aliases, compare, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile, status
from pydantic import ValidationError

from openmaas.api.deps import CallerDep, RegistryDep, caller
from openmaas.errors import InvalidRequest
from openmaas.registry.entities import Lineage
from openmaas.registry.schemas import (
    AliasEventOut,
    AliasMoveOut,
    AliasRequest,
    CompareOut,
    ListOut,
    MetadataEditOut,
    MetadataPatch,
    ModelOut,
    ReasonRequest,
    RegisterRequest,
    VerifyOut,
    VersionMetadata,
    VersionOut,
)
from openmaas.registry.service import RegistryService, VersionSpec
from openmaas.registry.sources import (
    FilePlan,
    plan_directory,
    plan_hub,
    plan_onnx,
    plan_package,
    plan_spacy,
)

router = APIRouter(prefix="/v1/registry", tags=["registry"], dependencies=[Depends(caller)])


def _spec(meta: VersionMetadata, actor: str) -> VersionSpec:
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
        created_by=actor,
    )


def _plan(body: RegisterRequest, registry: RegistryService) -> FilePlan:
    source = body.source
    if source.type == "path":
        return plan_directory(Path(source.path))
    if source.type == "onnx":
        tokenizer = Path(source.tokenizer_path) if source.tokenizer_path else None
        return plan_onnx(Path(source.path), tokenizer)
    if source.type == "spacy":
        return plan_spacy(source.package)
    if source.type == "package":
        return plan_package(source.distribution, source.subpath)
    return plan_hub(source.repo_id, source.revision, registry.artifacts.root / "hub-cache")


@router.get("/models")
def list_models(registry: RegistryDep) -> ListOut[ModelOut]:
    return ListOut(data=[ModelOut.from_entity(m) for m in registry.list_models()])


@router.get("/models/{name}")
def get_model(name: str, registry: RegistryDep) -> ModelOut:
    return ModelOut.from_entity(registry.get_model(name))


@router.patch("/models/{name}")
def update_model(name: str, body: MetadataPatch, registry: RegistryDep, who: CallerDep) -> ModelOut:
    model = registry.update_model(
        name, description=body.description, tags=body.tags, actor=who.actor
    )
    return ModelOut.from_entity(model)


@router.delete("/models/{name}")
def delete_model(name: str, registry: RegistryDep) -> dict[str, object]:
    registry.delete_model(name)
    return {"object": "registered_model", "name": name, "deleted": True}


@router.get("/models/{name}/history")
def model_metadata_history(name: str, registry: RegistryDep) -> ListOut[MetadataEditOut]:
    return ListOut(data=[MetadataEditOut.from_entity(e) for e in registry.metadata_history(name)])


@router.post("/models/{name}/versions", status_code=status.HTTP_201_CREATED)
def register_version(
    name: str, body: RegisterRequest, registry: RegistryDep, who: CallerDep
) -> VersionOut:
    plan = _plan(body, registry)
    return VersionOut.from_entity(registry.register_plan(name, plan, _spec(body, who.actor)))


@router.post("/models/{name}/versions/upload", status_code=status.HTTP_201_CREATED)
def upload_version(
    name: str,
    registry: RegistryDep,
    who: CallerDep,
    file: Annotated[UploadFile, File(description="The model directory as a .tar.gz archive.")],
    metadata: Annotated[
        str, Form(description="JSON object with the fields of VersionMetadata.")
    ] = "{}",
) -> VersionOut:
    try:
        meta = VersionMetadata.model_validate(json.loads(metadata))
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"metadata is not valid JSON: {exc.msg}", param="metadata") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"metadata.{where}: {first['msg']}", param="metadata") from None
    source = {"type": "upload", "filename": file.filename or ""}
    version = registry.register_archive(name, file.file, _spec(meta, who.actor), source=source)
    return VersionOut.from_entity(version)


@router.get("/models/{name}/versions")
def list_versions(name: str, registry: RegistryDep) -> ListOut[VersionOut]:
    return ListOut(data=[VersionOut.from_entity(v) for v in registry.list_versions(name)])


@router.get("/models/{name}/versions/{version}")
def get_version(name: str, version: int, registry: RegistryDep) -> VersionOut:
    return VersionOut.from_entity(registry.get_version(name, version))


@router.patch("/models/{name}/versions/{version}")
def update_version(
    name: str, version: int, body: MetadataPatch, registry: RegistryDep, who: CallerDep
) -> VersionOut:
    updated = registry.update_version(
        name, version, description=body.description, tags=body.tags, actor=who.actor
    )
    return VersionOut.from_entity(updated)


@router.delete("/models/{name}/versions/{version}")
def delete_version(name: str, version: int, registry: RegistryDep) -> dict[str, object]:
    registry.delete_version(name, version)
    return {"object": "model_version", "model": name, "version": version, "deleted": True}


@router.get("/models/{name}/versions/{version}/history")
def version_metadata_history(
    name: str, version: int, registry: RegistryDep
) -> ListOut[MetadataEditOut]:
    edits = registry.metadata_history(name, version)
    return ListOut(data=[MetadataEditOut.from_entity(e) for e in edits])


@router.post("/models/{name}/versions/{version}/verify")
def verify_version(name: str, version: int, registry: RegistryDep) -> VerifyOut:
    return VerifyOut.from_entity(registry.verify(name, version))


@router.get("/models/{name}/compare")
def compare_versions(
    name: str,
    registry: RegistryDep,
    a: Annotated[int, Query(ge=1, description="First version.")],
    b: Annotated[int, Query(ge=1, description="Second version.")],
) -> CompareOut:
    return CompareOut.from_entity(registry.compare(name, a, b))


@router.get("/models/{name}/aliases")
def list_aliases(name: str, registry: RegistryDep) -> dict[str, int]:
    return registry.get_model(name).aliases


@router.get("/models/{name}/aliases/history")
def all_alias_history(name: str, registry: RegistryDep) -> ListOut[AliasEventOut]:
    return ListOut(data=[AliasEventOut.from_entity(e) for e in registry.alias_history(name)])


@router.put("/models/{name}/aliases/{alias}")
def set_alias(
    name: str, alias: str, body: AliasRequest, registry: RegistryDep, who: CallerDep
) -> AliasMoveOut:
    event = registry.set_alias(name, alias, body.version, actor=who.actor, reason=body.reason)
    return AliasMoveOut(
        model=name,
        alias=alias,
        version=body.version,
        event=AliasEventOut.from_entity(event) if event else None,
    )


@router.delete("/models/{name}/aliases/{alias}")
def delete_alias(
    name: str,
    alias: str,
    registry: RegistryDep,
    who: CallerDep,
    reason: Annotated[str, Query(max_length=2_000)] = "",
) -> AliasMoveOut:
    event = registry.delete_alias(name, alias, actor=who.actor, reason=reason)
    return AliasMoveOut(
        model=name, alias=alias, version=None, event=AliasEventOut.from_entity(event)
    )


@router.get("/models/{name}/aliases/{alias}/history")
def alias_history(name: str, alias: str, registry: RegistryDep) -> ListOut[AliasEventOut]:
    return ListOut(data=[AliasEventOut.from_entity(e) for e in registry.alias_history(name, alias)])


@router.post("/models/{name}/aliases/{alias}/rollback")
def rollback_alias(
    name: str, alias: str, registry: RegistryDep, who: CallerDep, body: ReasonRequest | None = None
) -> AliasMoveOut:
    reason = body.reason if body else ""
    event = registry.rollback_alias(name, alias, actor=who.actor, reason=reason)
    return AliasMoveOut(
        model=name,
        alias=alias,
        version=event.to_version,
        event=AliasEventOut.from_entity(event),
    )


@router.get("/resolve")
def resolve_reference(
    registry: RegistryDep,
    ref: Annotated[str, Query(description="name, name@alias or name:version", max_length=256)],
) -> VersionOut:
    return VersionOut.from_entity(registry.resolve(ref))
