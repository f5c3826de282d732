"""Wire models of the Open Inference Protocol v2 (KServe / Triton).

The REST protocol is JSON; Triton's binary tensor data extension lets a request or response
carry tensor bytes after the JSON header, whose length the `Inference-Header-Content-Length`
header gives (the codec is `openmaas.api.v2.tensors`).

Example::

    request = InferenceRequest.model_validate_json(body)
    [tensor.name for tensor in request.inputs]
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

HEADER_LENGTH = "Inference-Header-Content-Length"

Parameters = dict[str, Any]  # string, number or boolean values


class _Wire(BaseModel):
    # Clients add fields of extensions we do not implement; ignoring them is what Triton does.
    model_config = ConfigDict(extra="ignore")


# -- health -------------------------------------------------------------------------------------


class ServerLiveResponse(_Wire):
    live: bool


class ServerReadyResponse(_Wire):
    ready: bool


class ModelReadyResponse(_Wire):
    name: str
    ready: bool
    reason: str | None = None  # ours: why a model is not ready, and how to make it so


# -- metadata -----------------------------------------------------------------------------------


class ServerMetadataResponse(_Wire):
    name: str
    version: str
    extensions: list[str]


class MetadataTensor(_Wire):
    name: str
    datatype: str
    shape: list[int]  # -1 = any size
    parameters: Parameters | None = None


class ModelMetadataResponse(_Wire):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters | None = None


class RepositoryIndexRequest(_Wire):
    ready: bool = False  # only models ready for inference


class RepositoryLoadRequest(_Wire):
    parameters: Parameters | None = None  # Triton's config / file: overrides


class RepositoryIndexEntry(_Wire):
    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str = ""


# -- inference ----------------------------------------------------------------------------------


class RequestInput(_Wire):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None  # row-major, flat or nested; absent when sent as binary


class RequestOutput(_Wire):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(_Wire):
    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Wire):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    # A flat list, or a numeric numpy array that orjson writes directly; absent when binary.
    data: Any = None


class InferenceResponse(_Wire):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput] = []
