"""TensorFlow Serving / KServe v1 REST routes, so clients written for them work unchanged.

- `POST /v1/models/{name}:predict` (also `/versions/{v}:predict`, `/labels/{alias}:predict`)
  takes `{"instances": [...]}` and answers `{"predictions": [...]}` (columnar: `inputs` →
  `outputs`): for a text classifier one string per instance and the class scores in label
  order per prediction (`labels` names the columns); for an image classifier one image per
  instance (nested pixel arrays or `{"b64": ...}`) and its class scores; for an embedding
  model the vectors.
- `GET /v1/models/{name}[/versions/{v}]/metadata` answers TF Serving's model metadata (the
  `serving_default` signature: input and output dtypes and shapes).
- `GET /v1/models/{name}/versions/{v}` and `/labels/{alias}` answer TF Serving's model status
  (`model_version_status`). `GET /v1/models/{name}` stays OpenAI's model card; it answers
  the status when asked with `?protocol=tfserving` (`?protocol=kserve`: KServe v1's
  `{"name", "ready"}`), see `api.openai.models`.

Same keys, scopes, limits and metering as `/v1/classify`.

Example::

    requests.post(f"{url}/v1/models/sentiment:predict", json={"instances": ["great film"]},
                  headers={"Authorization": f"Bearer {key}"}).json()
    # -> {"predictions": [[0.04, 0.96]], "labels": ["negative", "positive"]}
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request, Response

from openmaas.api.deps import EngineDep, PrincipalDep, requires
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.responses import json_response, mark_model
from openmaas.api.tfserving.adapter import predict_adapter, signature
from openmaas.api.v2.adapter import facts
from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope
from openmaas.errors import InvalidRequest
from openmaas.protocol.common import parse_decimal
from openmaas.protocol.predict import (
    KServeModelStatus,
    ModelMetadata,
    ModelMetadataResponse,
    ModelSpec,
    ModelStatusResponse,
    ModelVersionStatus,
    PredictRequest,
    PredictResponse,
    SignatureDefMap,
    VersionStatus,
)
from openmaas.registry.names import qualified
from openmaas.serving.engine import InferenceEngine

router = APIRouter(route_class=StrictJSONRoute, tags=["tensorflow-serving"])
_DESCRIBE = [Depends(requires(Scope.INFERENCE, Scope.MODELS_READ))]
_INFER = [Depends(requires(Scope.INFERENCE))]
SIGNATURE = "serving_default"
_VERSIONED = re.compile(r"(?P<name>.+)/(?P<kind>versions|labels)/(?P<which>[^/]+)")


@router.post("/v1/models/{target:path}:predict", dependencies=_INFER)
async def predict(
    target: str, body: PredictRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    if body.signature_name not in (None, SIGNATURE):
        raise InvalidRequest(
            f"signature_name {body.signature_name!r}: models here have one signature, "
            f"{SIGNATURE!r}",
            param="signature_name",
        )
    version = await engine.resolve(reference(target), caller=who)
    adapter = predict_adapter(version)
    field = "inputs" if body.columnar else "instances"
    inputs = adapter.decode(body.rows(), field, version.params)
    contract = adapter.contract
    await reserve_tokens(request, lambda: engine.token_bound(contract, inputs, None))
    exact = f"{qualified(version.project, version.model)}:{version.version}"  # as resolved
    served = await engine.infer(contract, exact, inputs, caller=who)
    mark_model(request, served.version)
    usage = contract.usage(served.results, served.prompt_tokens)
    meter(request, served.version, input_tokens=usage.input_tokens, items=usage.items)
    values, labels = adapter.encode(served.results, facts(engine, version))
    response = (
        PredictResponse(outputs=values, labels=labels)
        if body.columnar
        else PredictResponse(predictions=values, labels=labels)
    )
    return json_response(response.model_dump(exclude_none=True), served.version)


@router.get("/v1/models/{target:path}/metadata", dependencies=_DESCRIBE)
async def get_model_metadata(
    target: str, engine: EngineDep, who: PrincipalDep
) -> ModelMetadataResponse:
    """TF Serving's model metadata: the one signature, `serving_default`, of a model that
    `:predict` serves (its input's dtype and shape, e.g. a Keras image model's [-1, 28, 28,
    1]; its output's)."""
    version = await engine.resolve(reference(target), caller=who)
    signatures = SignatureDefMap(
        signature_def={SIGNATURE: signature(version, facts(engine, version))}
    )
    return ModelMetadataResponse(
        model_spec=ModelSpec(name=version.model, version=str(version.version)),
        metadata=ModelMetadata(signature_def=signatures),
    )


@router.get("/v1/models/{model_name:path}/versions/{which}", dependencies=_DESCRIBE)
async def get_version_status(
    model_name: str, which: str, engine: EngineDep, who: PrincipalDep
) -> ModelStatusResponse:
    return await model_status(engine, reference(f"{model_name}/versions/{which}"), who)


@router.get("/v1/models/{model_name:path}/labels/{which}", dependencies=_DESCRIBE)
async def get_label_status(
    model_name: str, which: str, engine: EngineDep, who: PrincipalDep
) -> ModelStatusResponse:
    return await model_status(engine, reference(f"{model_name}/labels/{which}"), who)


async def model_status(
    engine: InferenceEngine, model_reference: str, who: Principal
) -> ModelStatusResponse:
    """TF Serving's status of the version a reference names: AVAILABLE when it serves
    (loaded, or loaded on its first request), UNAVAILABLE when it was unloaded on request."""
    version = await engine.resolve(model_reference, caller=who)
    if engine.is_ready(version):
        status = ModelVersionStatus(version=str(version.version))
    else:
        status = ModelVersionStatus(
            version=str(version.version),
            state="UNAVAILABLE",
            status=VersionStatus(error_code="UNAVAILABLE", error_message="unloaded on request"),
        )
    return ModelStatusResponse(model_version_status=[status])


async def kserve_status(
    engine: InferenceEngine, model_name: str, who: Principal
) -> KServeModelStatus:
    """KServe v1's model status: `{"name", "ready"}`."""
    version = await engine.resolve(model_name, caller=who)
    return KServeModelStatus(name=model_name, ready=engine.is_ready(version))


def reference(target: str) -> str:
    """An OpenMaaS reference for a TF Serving model path: `name/versions/3` is `name:3`,
    `name/labels/prod` is `name@prod`; anything else is a reference as it stands."""
    match = _VERSIONED.fullmatch(target)
    if match is None:
        return target
    name, which = match["name"], match["which"]
    if match["kind"] == "labels":
        return f"{name}@{which}"
    number = parse_decimal(which)
    if number is None or number < 1:
        raise InvalidRequest(
            f"model version {which!r}: versions are numbers (1, 2, ...); leave out "
            "/versions/... to use the version the model name serves",
            param="model",
        )
    return f"{name}:{number}"
