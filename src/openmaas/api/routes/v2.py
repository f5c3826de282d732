"""Open Inference Protocol v2 (KServe / Triton REST), so `tritonclient.http` works unchanged.

A v2 model is an OpenMaaS model name; `/versions/{v}` picks version `v`, no version means what
the bare name serves. Each task has fixed tensors (see `_inputs` / `_outputs`): text tasks take
`TEXT` (BYTES, shape [N] or [N, 1]), speech takes `AUDIO` (BYTES, shape [1]: the file's bytes).
Request-level `parameters` carry task options (`truncate`, `dimensions`, `max_tokens`,
`source_language`, `target_language`, `ratio`, `language`, `prompt`, `temperature`).

Example::

    client = tritonclient.http.InferenceServerClient("127.0.0.1:8000")
    text = InferInput("TEXT", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"hello"], dtype=object))
    client.infer("all-minilm-l6-v2", [text]).as_numpy("EMBEDDING").shape  # -> (1, 384)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import text as sql

from openmaas import __version__
from openmaas.api.deps import EngineDep, ServicesDep, requires
from openmaas.api.metering import meter
from openmaas.api.protocol.v2 import (
    HEADER_LENGTH,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    ModelMetadataResponse,
    Parameters,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    RepositoryLoadRequest,
    ServerMetadataResponse,
    Tensor,
    decode_infer_request,
    encode_infer_response,
    wants_binary,
)
from openmaas.api.responses import VERSION_HEADER, mark_model
from openmaas.auth.access import check_changeable
from openmaas.auth.scopes import Scope
from openmaas.errors import InvalidRequest, ModelNotLoaded, WrongTask
from openmaas.registry.entities import ModelVersion
from openmaas.runtimes.base import LabelScore, LoadedModel, Seq2SeqParams, TranscriptionParams
from openmaas.serving.engine import InferenceEngine, Served
from openmaas.tasks.names import Task

# Server metadata and health answer without a key (orchestrators probe them); every model
# route needs one. Scopes per route below.
router = APIRouter(tags=["open-inference-v2"])
_DESCRIBE = [Depends(requires(Scope.INFERENCE, Scope.MODELS_READ))]
_INFER = [Depends(requires(Scope.INFERENCE))]
_MANAGE = [Depends(requires(Scope.MODELS_WRITE))]

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]

_TEXT_INPUT = "TEXT"
_AUDIO_INPUT = "AUDIO"
# Every output of each task, in response order; requests may ask for a subset.
OUTPUT_NAMES: dict[Task, tuple[str, ...]] = {
    Task.EMBEDDING: ("EMBEDDING",),
    Task.TEXT_CLASSIFICATION: ("LABEL", "SCORE", "SCORES"),
    Task.TOKEN_CLASSIFICATION: ("ENTITIES",),
    Task.TRANSLATION: ("TEXT_OUT",),
    Task.SUMMARIZATION: ("TEXT_OUT",),
    Task.SPEECH_RECOGNITION: ("TEXT_OUT",),
}

ModelT = TypeVar("ModelT", bound=BaseModel)
ParamT = TypeVar("ParamT")


# -- server ---------------------------------------------------------------------------------------


@router.get("/v2")
async def get_server_metadata() -> ServerMetadataResponse:
    return ServerMetadataResponse(name="openmaas", version=__version__, extensions=EXTENSIONS)


@router.get("/v2/health/live")
async def check_server_live() -> Response:
    return Response(status_code=200)


@router.get("/v2/health/ready")
def check_server_ready(services: ServicesDep) -> Response:
    # Models load on first use, so the server is ready once it can read the registry.
    with services.db.engine.connect() as connection:
        connection.execute(sql("SELECT 1"))
    return Response(status_code=200)


# -- models ---------------------------------------------------------------------------------------


@router.get("/v2/models/{model_name}", response_model_exclude_none=True, dependencies=_DESCRIBE)
@router.get(
    "/v2/models/{model_name}/versions/{model_version}",
    response_model_exclude_none=True,
    dependencies=_DESCRIBE,
)
async def get_model_metadata(
    model_name: str, engine: EngineDep, model_version: str | None = None
) -> ModelMetadataResponse:
    version = await engine.resolve(_reference(model_name, model_version))
    versions = await asyncio.to_thread(engine.registry.list_versions, version.model)
    model = _loaded(engine, version)
    labels = _labels(version, model)
    return ModelMetadataResponse(
        name=model_name,
        versions=[str(v.version) for v in versions],
        platform=version.runtime,
        inputs=_inputs(version),
        outputs=_outputs(version, model),
        parameters=_model_parameters(version, labels),
    )


@router.get("/v2/models/{model_name}/ready", dependencies=_DESCRIBE)
@router.get("/v2/models/{model_name}/versions/{model_version}/ready", dependencies=_DESCRIBE)
async def check_model_ready(
    model_name: str, engine: EngineDep, model_version: str | None = None
) -> Response:
    """200 when the version is loaded; 400 otherwise, as Triton answers for a model that
    is known but not ready (an unknown model is a 404)."""
    version = await engine.resolve(_reference(model_name, model_version))
    if not engine.is_loaded(version):
        raise InvalidRequest(
            f"model '{version.model}:{version.version}' is not loaded; it loads on its first "
            f"inference request, or POST /v2/repository/models/{model_name}/load",
            param="model",
            code="model_not_ready",
        )
    return Response(status_code=200)


@router.get("/v2/models/{model_name}/config", dependencies=_DESCRIBE)
@router.get("/v2/models/{model_name}/versions/{model_version}/config", dependencies=_DESCRIBE)
async def get_model_config(
    model_name: str, engine: EngineDep, model_version: str | None = None
) -> dict[str, Any]:
    """A Triton-style model configuration: dims exclude the batch dimension when
    `max_batch_size` > 0; per-item tensors have dims [1] reshaped to [] (Triton's idiom)."""
    version = await engine.resolve(_reference(model_name, model_version))
    model = _loaded(engine, version)
    inputs, outputs = _inputs(version), _outputs(version, model)
    batched = any(t.shape[:1] == [-1] for t in inputs)
    parameters = {
        key: {"string_value": str(value)}
        for key, value in _model_parameters(version, _labels(version, model)).items()
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
    model_name: str, request: Request, engine: EngineDep, model_version: str | None = None
) -> Response:
    encoding = request.headers.get("content-encoding", "identity")
    if encoding != "identity":
        raise InvalidRequest(
            f"Content-Encoding {encoding} is not supported; send the request uncompressed"
        )
    body = await request.body()
    infer_request, tensors = decode_infer_request(body, request.headers.get(HEADER_LENGTH))
    version = await engine.resolve(_reference(model_name, model_version))
    task = _task(version)
    requested = _requested_outputs(infer_request, version, task)
    outputs = await _run(engine, request, version, task, tensors, infer_request.parameters or {})
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
async def index_repository(request: Request, engine: EngineDep) -> list[RepositoryIndexEntry]:
    """Every registered model with the version its name serves, plus any other loaded version."""
    index_request = _parse_json(await request.body(), RepositoryIndexRequest)
    entries = []
    listed = set()
    for _, version in await engine.list_models():
        listed.add((version.model, version.version))
        entries.append(_index_entry(version.model, version.version, engine.is_loaded(version)))
    visible = {name for name, _ in listed}  # list_models answers only the caller's models
    for resident in engine.pool.residents():
        if resident.key not in listed and resident.key[0] in visible:
            entries.append(_index_entry(*resident.key, True))
    if index_request.ready:
        entries = [e for e in entries if e.state == "READY"]
    return sorted(entries, key=lambda e: (e.name, int(e.version)))


@router.post("/v2/repository/models/{model_name}/load", dependencies=_MANAGE)
async def load_model(model_name: str, request: Request, engine: EngineDep) -> Response:
    if _parse_json(await request.body(), RepositoryLoadRequest).parameters:
        raise InvalidRequest(
            "load parameters (config, file:...) are not supported: OpenMaaS loads registered "
            "versions as recorded; register new files through /v1/registry"
        )
    await _check_changeable(engine, model_name)
    await engine.load(model_name)
    return Response(status_code=200)


@router.post("/v2/repository/models/{model_name}/unload", dependencies=_MANAGE)
async def unload_model(model_name: str, engine: EngineDep) -> Response:
    await _check_changeable(engine, model_name)
    with suppress(ModelNotLoaded):  # already unloaded: success, as Triton answers
        await engine.unload(model_name)
    return Response(status_code=200)


async def _check_changeable(engine: InferenceEngine, reference: str) -> None:
    # Loading and unloading affect every caller of a model: its own project (or an admin)
    # only, also for public models.
    version = await engine.resolve(reference)
    check_changeable(version.model, version.project, version.public)


# -- tensors per task -----------------------------------------------------------------------------


def _task(version: ModelVersion) -> Task:
    task = Task(version.task)
    if task not in OUTPUT_NAMES:
        served = ", ".join(t.value for t in OUTPUT_NAMES)
        raise WrongTask(
            f"model '{version.model}' is a {task.value} model; the v2 protocol here serves "
            f"{served} models (use the /v1 routes for the others)",
            param="model",
        )
    return task


def _inputs(version: ModelVersion) -> list[MetadataTensor]:
    if version.task == Task.SPEECH_RECOGNITION:
        return [MetadataTensor(name=_AUDIO_INPUT, datatype="BYTES", shape=[1])]
    if version.task in OUTPUT_NAMES:
        return [MetadataTensor(name=_TEXT_INPUT, datatype="BYTES", shape=[-1])]
    return []


def _outputs(version: ModelVersion, model: LoadedModel | None) -> list[MetadataTensor]:
    task = version.task
    if task == Task.EMBEDDING:
        dimensions = (model.embedding_dimensions if model else None) or version.params.get(
            "dimensions"
        )
        return [_tensor("EMBEDDING", "FP32", [-1, int(dimensions or -1)])]
    if task == Task.TEXT_CLASSIFICATION:
        labels = _labels(version, model)
        return [
            _tensor("LABEL", "BYTES", [-1]),
            _tensor("SCORE", "FP32", [-1]),
            _tensor("SCORES", "FP32", [-1, len(labels) if labels else -1]),
        ]
    if task == Task.TOKEN_CLASSIFICATION:
        return [_tensor("ENTITIES", "BYTES", [-1])]
    if task in (Task.TRANSLATION, Task.SUMMARIZATION):
        return [_tensor("TEXT_OUT", "BYTES", [-1])]
    if task == Task.SPEECH_RECOGNITION:
        return [_tensor("TEXT_OUT", "BYTES", [1])]
    return []


def _tensor(name: str, datatype: str, shape: list[int]) -> MetadataTensor:
    return MetadataTensor(name=name, datatype=datatype, shape=shape)


def _model_parameters(version: ModelVersion, labels: Sequence[str] | None) -> Parameters:
    # v2 parameter values are scalars: the label order of SCORES travels as a JSON array text.
    parameters: Parameters = {"task": version.task}
    if labels:
        parameters["labels"] = orjson.dumps(list(labels)).decode()
    return parameters


async def _run(
    engine: InferenceEngine,
    request: Request,
    version: ModelVersion,
    task: Task,
    tensors: Sequence[Tensor],
    parameters: Parameters,
) -> list[Tensor]:
    reference = f"{version.model}:{version.version}"  # as resolved: an alias move cannot race
    if task == Task.SPEECH_RECOGNITION:
        audio = _audio(_single_input(tensors, version, _AUDIO_INPUT))
        options = TranscriptionParams(
            language=_param(parameters, "language", str),
            prompt=_param(parameters, "prompt", str),
            temperature=_param(parameters, "temperature", float) or 0.0,
        )
        transcribed = await engine.transcribe(reference, audio, options)
        seconds = transcribed.results[0].duration_seconds
        meter(request, version, items=1, audio_seconds=seconds)
        return [_strings("TEXT_OUT", [transcribed.results[0].text])]
    texts = _texts(_single_input(tensors, version, _TEXT_INPUT))
    truncate = _param(parameters, "truncate", bool) or False
    if task == Task.EMBEDDING:
        dimensions = _param(parameters, "dimensions", int)
        embedded = await engine.embed(reference, texts, truncate=truncate, dimensions=dimensions)
        _meter(request, embedded)
        vectors = np.stack(embedded.results).astype(np.float32, copy=False)
        return [Tensor("EMBEDDING", "FP32", vectors)]
    if task == Task.TEXT_CLASSIFICATION:
        classified = await engine.classify(reference, texts, truncate=truncate)
        _meter(request, classified)
        return _classification(engine, version, classified.results)
    if task == Task.TOKEN_CLASSIFICATION:
        found = await engine.extract_entities(reference, texts, truncate=truncate)
        _meter(request, found)
        documents = [
            orjson.dumps(
                [
                    {"text": e.text, "label": e.label, "start": e.start, "end": e.end}
                    | ({} if e.score is None else {"score": e.score})
                    for e in entities
                ]
            )
            for entities in found.results
        ]
        return [_strings("ENTITIES", documents)]
    params = Seq2SeqParams(
        source_language=_param(parameters, "source_language", str),
        target_language=_param(parameters, "target_language", str),
        ratio=_param(parameters, "ratio", float),
    )
    max_tokens = _param(parameters, "max_tokens", int)
    if max_tokens is not None:
        params = replace(params, max_tokens=max_tokens)
    run = engine.translate if task == Task.TRANSLATION else engine.summarize
    generated = await run(reference, texts, params)
    _meter(request, generated)
    return [_strings("TEXT_OUT", generated.results)]


def _meter(request: Request, served: Served[Any]) -> None:
    meter(request, served.version, input_tokens=served.prompt_tokens, items=len(served.results))


def _classification(
    engine: InferenceEngine, version: ModelVersion, results: Sequence[list[LabelScore]]
) -> list[Tensor]:
    labels = _labels(version, _loaded(engine, version))
    if not labels:  # a runtime that names no labels: order them by name
        labels = sorted({s.label for ranking in results for s in ranking})
    column = {label: i for i, label in enumerate(labels)}
    scores = np.zeros((len(results), len(labels)), dtype=np.float32)
    for row, ranking in enumerate(results):
        for item in ranking:
            if item.label in column:
                scores[row, column[item.label]] = item.score
    return [
        _strings("LABEL", [ranking[0].label for ranking in results]),
        Tensor("SCORE", "FP32", np.array([r[0].score for r in results], dtype=np.float32)),
        Tensor("SCORES", "FP32", scores),
    ]


def _labels(version: ModelVersion, model: LoadedModel | None) -> list[str] | None:
    """The order of SCORES columns: the loaded model's labels, else the recorded ones."""
    if model is not None and model.labels:
        return list(model.labels)
    recorded = version.params.get("labels")
    if isinstance(recorded, list) and all(isinstance(v, str) for v in recorded):
        return recorded
    return None


def _loaded(engine: InferenceEngine, version: ModelVersion) -> LoadedModel | None:
    resident = engine.pool.get_loaded((version.model, version.version))
    return resident.model if resident is not None else None


# -- request checks -------------------------------------------------------------------------------


def _reference(model_name: str, model_version: str | None) -> str:
    if model_version is None:
        return model_name
    if not model_version.isdigit():
        raise InvalidRequest(
            f"model version {model_version!r}: versions are numbers (1, 2, ...); leave out "
            "/versions/... to use the version the model name serves",
            param="model",
        )
    return f"{model_name}:{int(model_version)}"


def _expected(name: str) -> str:
    if name == _AUDIO_INPUT:
        return "AUDIO (BYTES, shape [1]: one audio file's bytes)"
    return "TEXT (BYTES, shape [N] or [N, 1]: UTF-8 strings)"


def _single_input(tensors: Sequence[Tensor], version: ModelVersion, name: str) -> Tensor:
    label = f"'{version.model}' ({version.task})"
    names = [t.name for t in tensors]
    if names != [name]:
        got = ", ".join(names) or "none"
        raise InvalidRequest(
            f"model {label} takes one input, {_expected(name)}; got {got}", param="inputs"
        )
    tensor = tensors[0]
    if tensor.datatype != "BYTES":
        raise InvalidRequest(
            f"input {name} has datatype {tensor.datatype}; model {label} expects {_expected(name)}",
            param="inputs",
        )
    shape = tensor.array.shape
    if name == _AUDIO_INPUT:
        fits = tensor.array.size == 1 and len(shape) in (1, 2)
    else:
        fits = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    if not fits or tensor.array.size == 0:
        raise InvalidRequest(
            f"input {name} has shape {list(shape)}; model {label} expects {_expected(name)}",
            param="inputs",
        )
    return tensor


def _texts(tensor: Tensor) -> list[str]:
    texts = []
    for index, raw in enumerate(tensor.array.ravel()):
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise InvalidRequest(
                f"input TEXT[{index}] is not valid UTF-8", param="inputs"
            ) from None
        if not text.strip():
            raise InvalidRequest(
                f"input TEXT[{index}] is empty; every input needs some text", param="inputs"
            )
        texts.append(text)
    return texts


def _audio(tensor: Tensor) -> bytes:
    audio: bytes = tensor.array.ravel()[0]
    if not audio:
        raise InvalidRequest("input AUDIO is empty; send the audio file's bytes", param="inputs")
    return audio


def _requested_outputs(
    request: InferenceRequest, version: ModelVersion, task: Task
) -> list[tuple[str, bool]]:
    """(output name, as binary) in response order: the requested outputs, else all of them."""
    default = (request.parameters or {}).get("binary_data_output", False) is True
    names = OUTPUT_NAMES[task]
    if request.outputs is None:
        return [(name, default) for name in names]
    requested: list[tuple[str, bool]] = []
    for output in request.outputs:
        if output.name not in names:
            raise InvalidRequest(
                f"output {output.name!r} is not an output of model '{version.model}' "
                f"({version.task}); it has {', '.join(names)}",
                param="outputs",
            )
        if output.name in (name for name, _ in requested):
            raise InvalidRequest(f"output {output.name} is requested twice", param="outputs")
        requested.append((output.name, wants_binary(output.parameters, default)))
    return requested


def _param(parameters: Parameters, name: str, kind: type[ParamT]) -> ParamT | None:
    """A request parameter of the given type, or None when absent."""
    value = parameters.get(name)
    if value is None:
        return None
    # JSON numbers: an int is a valid float; a bool is not a number.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidRequest(
            f"parameters.{name} must be a {kind.__name__}, not {value!r}", param=name
        )
    return value


def _strings(name: str, values: Sequence[str | bytes]) -> Tensor:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return Tensor(name, "BYTES", array)


def _parse_json(body: bytes, model: type[ModelT]) -> ModelT:
    if not body.strip():
        return model()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first["loc"]) or "request"
        raise InvalidRequest(f"{location}: {first['msg']}") from None


def _index_entry(name: str, version: int, loaded: bool) -> RepositoryIndexEntry:
    return RepositoryIndexEntry(
        name=name,
        version=str(version),
        state="READY" if loaded else "UNAVAILABLE",
        reason="" if loaded else "unloaded",
    )


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
