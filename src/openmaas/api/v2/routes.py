"""Open Inference Protocol v2 (KServe / Triton REST), so `tritonclient.http` works unchanged.

A v2 model is an OpenMaaS model name; `/versions/{v}` picks version `v`, no version means what
the bare name serves. Each task's contract declares its tensors (`TaskContract.v2_*`, served through
`api.v2.adapter`): text tasks take `TEXT` (BYTES, shape [N] or [N, 1]), speech takes `AUDIO`
(BYTES, shape [1]: the file's bytes). Request-level `parameters` carry task options
(`truncate`, `dimensions`, `max_tokens`, `source_language`, `target_language`, `ratio`,
`language`, `prompt`, `temperature`). This file holds only the routes.

Example::

    client = tritonclient.http.InferenceServerClient("127.0.0.1:8000")
    text = InferInput("TEXT", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"hello"], dtype=object))
    client.infer("all-minilm-l6-v2", [text]).as_numpy("EMBEDDING").shape  # -> (1, 384)
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import text as sql

from openmaas import __version__
from openmaas.api.deps import EngineDep, PrincipalDep, ServicesDep, requires
from openmaas.api.errors import load_hint
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.responses import VERSION_HEADER, mark_model
from openmaas.api.v2.adapter import (
    facts,
    input_tensors,
    model_parameters,
    output_tensors,
    requested_outputs,
    run_inference,
    v2_contract,
)
from openmaas.api.v2.tensors import decode_infer_request, encode_infer_response
from openmaas.auth.access import check_changeable
from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.errors import InvalidRequest, ModelNotLoaded
from openmaas.protocol.common import parse_decimal
from openmaas.protocol.v2 import (
    HEADER_LENGTH,
    InferenceResponse,
    MetadataTensor,
    ModelMetadataResponse,
    ModelReadyResponse,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    RepositoryLoadRequest,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)
from openmaas.registry.entities import ModelVersion
from openmaas.registry.names import qualified
from openmaas.serving.engine import InferenceEngine, version_key

# Health answers without a key (orchestrators probe it); every other route needs one: server
# metadata any key, the others the scopes below.
router = APIRouter(route_class=StrictJSONRoute, tags=["open-inference-v2"])
_KEY = [Depends(requires())]
_DESCRIBE = [Depends(requires(Scope.INFERENCE, Scope.MODELS_READ))]
_INFER = [Depends(requires(Scope.INFERENCE))]
_MANAGE = [Depends(requires(Scope.MODELS_WRITE))]

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]

ModelT = TypeVar("ModelT", bound=BaseModel)


# -- server ---------------------------------------------------------------------------------------


@router.get("/v2", dependencies=_KEY)
async def get_server_metadata() -> ServerMetadataResponse:
    return ServerMetadataResponse(name="openmaas", version=__version__, extensions=EXTENSIONS)


@router.get("/v2/health/live")
async def check_server_live() -> ServerLiveResponse:
    return ServerLiveResponse(live=True)


@router.get("/v2/health/ready")
def check_server_ready(services: ServicesDep) -> ServerReadyResponse:
    # Models load on first use, so the server is ready once it can read the registry.
    with services.db.engine.connect() as connection:
        connection.execute(sql("SELECT 1"))
    return ServerReadyResponse(ready=True)


# -- models ---------------------------------------------------------------------------------------


@router.get("/v2/models/{model_name}", response_model_exclude_none=True, dependencies=_DESCRIBE)
@router.get(
    "/v2/models/{model_name}/versions/{model_version}",
    response_model_exclude_none=True,
    dependencies=_DESCRIBE,
)
async def get_model_metadata(
    model_name: str, engine: EngineDep, who: PrincipalDep, model_version: str | None = None
) -> ModelMetadataResponse:
    version = await engine.resolve(_reference(model_name, model_version), caller=who)
    # The engine's resolve checked that the caller may see the model.
    versions = await asyncio.to_thread(
        engine.registry.store.list_versions,
        qualified(version.project, version.model),
        caller=SYSTEM,
    )
    known = facts(engine, version)
    return ModelMetadataResponse(
        name=model_name,
        versions=[str(v.version) for v in versions],
        platform=version.runtime,
        inputs=input_tensors(version),
        outputs=output_tensors(version, known),
        parameters=model_parameters(version, known),
    )


_READY: dict[str, Any] = {
    "response_model": ModelReadyResponse,
    "response_model_exclude_none": True,
    "responses": {400: {"model": ModelReadyResponse, "description": "Not ready"}},
    "dependencies": _DESCRIBE,
}


@router.get("/v2/models/{model_name}/ready", **_READY)
@router.get("/v2/models/{model_name}/versions/{model_version}/ready", **_READY)
async def check_model_ready(
    model_name: str, engine: EngineDep, who: PrincipalDep, model_version: str | None = None
) -> JSONResponse:
    """`{"name", "ready"}`: 200 when the version is servable (loaded, or loaded on its first
    request); 400 when it was unloaded on request and is held so, the status Triton answers
    for a model that is known but not ready (an unknown model is a 404)."""
    version = await engine.resolve(_reference(model_name, model_version), caller=who)
    if engine.is_ready(version):
        return _model_ready(ModelReadyResponse(name=model_name, ready=True), 200)
    reference = f"{version.model}:{version.version}"
    reason = f"model '{reference}' was unloaded on request; {load_hint(reference)}"
    return _model_ready(ModelReadyResponse(name=model_name, ready=False, reason=reason), 400)


@router.get("/v2/models/{model_name}/config", dependencies=_DESCRIBE)
@router.get("/v2/models/{model_name}/versions/{model_version}/config", dependencies=_DESCRIBE)
async def get_model_config(
    model_name: str, engine: EngineDep, who: PrincipalDep, model_version: str | None = None
) -> dict[str, Any]:
    """A Triton-style model configuration: dims exclude the batch dimension when
    `max_batch_size` > 0; per-item tensors have dims [1] reshaped to [] (Triton's idiom)."""
    version = await engine.resolve(_reference(model_name, model_version), caller=who)
    known = facts(engine, version)
    inputs, outputs = input_tensors(version), output_tensors(version, known)
    batched = any(t.shape[:1] == [-1] for t in inputs)
    parameters = {
        key: {"string_value": str(value)} for key, value in model_parameters(version, known).items()
    }
    return {
        "name": model_name,
        "platform": version.runtime,
        "backend": "openmaas",
        "version_policy": {"specific": {"versions": [version.version]}},
        "max_batch_size": engine.settings.max_items_per_request if batched else 0,
        "input": [_config_tensor(t, batched) for t in inputs],
        "output": [_config_tensor(t, batched) for t in outputs],
        "parameters": parameters,
    }


# -- inference ------------------------------------------------------------------------------------


@router.post("/v2/models/{model_name}/infer", dependencies=_INFER)
@router.post("/v2/models/{model_name}/versions/{model_version}/infer", dependencies=_INFER)
async def infer(
    model_name: str,
    request: Request,
    engine: EngineDep,
    who: PrincipalDep,
    model_version: str | None = None,
) -> Response:
    encoding = request.headers.get("content-encoding", "identity")
    if encoding != "identity":
        raise InvalidRequest(
            f"Content-Encoding {encoding} is not supported; send the request uncompressed"
        )
    body = await request.body()
    infer_request, tensors = decode_infer_request(body, request.headers.get(HEADER_LENGTH))
    version = await engine.resolve(_reference(model_name, model_version), caller=who)
    contract = v2_contract(version)
    requested = requested_outputs(infer_request, version, contract)
    parameters = infer_request.parameters or {}
    outputs = await run_inference(engine, request, version, contract, tensors, parameters, who)
    mark_model(request, version)
    by_name = {t.name: t for t in outputs}
    encoded = encode_infer_response(
        InferenceResponse(
            model_name=model_name, model_version=str(version.version), id=infer_request.id
        ),
        [(by_name[name], binary) for name, binary in requested],
    )
    headers = {VERSION_HEADER: f"{version.model}:{version.version}"}
    if encoded.header_length is not None:
        headers[HEADER_LENGTH] = str(encoded.header_length)
    return Response(encoded.body, media_type=encoded.media_type, headers=headers)


# -- repository -----------------------------------------------------------------------------------


@router.post("/v2/repository/index", dependencies=_DESCRIBE)
async def index_repository(
    request: Request, engine: EngineDep, who: PrincipalDep
) -> list[RepositoryIndexEntry]:
    """Every version of every model the caller may see, one entry each. READY means
    servable, as the ready routes answer: loaded, or loaded on its first request."""
    index_request = _parse_json(await request.body(), RepositoryIndexRequest)
    versions = await engine.list_versions(caller=who)
    entries = [_index_entry(engine, address, v) for address, v in versions]
    if index_request.ready:
        entries = [e for e in entries if e.state == "READY"]
    return sorted(entries, key=lambda e: (e.name, int(e.version)))


@router.post("/v2/repository/models/{model_name}/load", dependencies=_MANAGE)
async def load_model(
    model_name: str, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    if _parse_json(await request.body(), RepositoryLoadRequest).parameters:
        raise InvalidRequest(
            "load parameters (config, file:...) are not supported: OpenMaaS loads registered "
            "versions as recorded; register new files through /v1/registry"
        )
    await _check_changeable(engine, model_name, who)
    await engine.load(model_name, caller=who)
    return Response(status_code=200)


@router.post("/v2/repository/models/{model_name}/unload", dependencies=_MANAGE)
async def unload_model(model_name: str, engine: EngineDep, who: PrincipalDep) -> Response:
    await _check_changeable(engine, model_name, who)
    with suppress(ModelNotLoaded):  # already unloaded: success, as Triton answers
        await engine.unload(model_name, caller=who)
    return Response(status_code=200)


async def _check_changeable(engine: InferenceEngine, reference: str, who: Principal) -> None:
    # Loading and unloading affect every caller of a model: its own project (or an admin)
    # only, and an admin only for a public one. `resolve` answers only what the caller sees.
    version = await engine.resolve(reference, caller=who)
    check_changeable(version.model, version.project, version.public, who)


# -- request checks -------------------------------------------------------------------------------


def _reference(model_name: str, model_version: str | None) -> str:
    if model_version is None:
        return model_name
    version = parse_decimal(model_version)
    if version is None or version < 1:
        raise InvalidRequest(
            f"model version {model_version!r}: versions are numbers (1, 2, ...); leave out "
            "/versions/... to use the version the model name serves",
            param="model",
        )
    return f"{model_name}:{version}"


def _parse_json(body: bytes, model: type[ModelT]) -> ModelT:
    if not body.strip():
        return model()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first["loc"]) or "request"
        raise InvalidRequest(f"{location}: {first['msg']}") from None


def _model_ready(body: ModelReadyResponse, status_code: int) -> JSONResponse:
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code)


def _index_entry(engine: InferenceEngine, name: str, version: ModelVersion) -> RepositoryIndexEntry:
    """`version` listed under `name`, the caller's name for its model."""
    key, number = version_key(version), str(version.version)
    if engine.pool.is_held(key):
        return RepositoryIndexEntry(
            name=name, version=number, state="UNAVAILABLE", reason="unloaded"
        )
    reason = "" if engine.pool.is_loaded(key) else "not loaded: loads on its first request"
    return RepositoryIndexEntry(name=name, version=number, state="READY", reason=reason)


def _config_tensor(tensor: MetadataTensor, batched: bool) -> dict[str, Any]:
    dims = tensor.shape[1:] if batched else tensor.shape
    config: dict[str, Any] = {
        "name": tensor.name,
        "data_type": "TYPE_STRING" if tensor.datatype == "BYTES" else f"TYPE_{tensor.datatype}",
        "dims": dims or [1],
    }
    if not dims:
        config["reshape"] = {"shape": []}
    return config
