"""Wire models of the TensorFlow Serving / KServe v1 REST protocol: `:predict`, the model
status that `GET /v1/models/{name}/versions/{v}` answers and the signature that
`GET /v1/models/{name}/metadata` answers.

Example::

    PredictRequest.model_validate({"instances": ["a great film"]}).rows()  # -> ["a great film"]
    PredictResponse(predictions=[[0.07, 0.93]], labels=["negative", "positive"])
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PredictRequest(BaseModel):
    """The row format (`instances`) or the columnar one (`inputs`), as TF Serving takes them."""

    model_config = ConfigDict(extra="forbid")

    signature_name: str | None = None
    instances: list[Any] | None = None
    inputs: Any = None

    @model_validator(mode="after")
    def _one_format(self) -> PredictRequest:
        if (self.instances is None) == (self.inputs is None):
            raise ValueError('give either "instances" (a list, one per input) or "inputs"')
        return self

    @property
    def columnar(self) -> bool:
        return self.instances is None

    def rows(self) -> list[Any]:
        """One item per input. Columnar `inputs` are a list, or an object naming the model's
        one input ({"text": [...]}); either way the same items as `instances`."""
        if self.instances is not None:
            return self.instances
        if isinstance(self.inputs, dict) and len(self.inputs) == 1:
            return _as_list(next(iter(self.inputs.values())))
        return _as_list(self.inputs)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class PredictResponse(BaseModel):
    """`predictions` (row format) or `outputs` (columnar), one entry per input; `labels`
    names a classifier's score columns."""

    predictions: list[Any] | None = None
    outputs: list[Any] | None = None
    labels: list[str] | None = None


class VersionStatus(BaseModel):
    error_code: Literal["OK", "UNAVAILABLE"] = "OK"
    error_message: str = ""


class ModelVersionStatus(BaseModel):
    version: str
    state: Literal["AVAILABLE", "UNAVAILABLE"] = "AVAILABLE"
    status: VersionStatus = Field(default_factory=VersionStatus)


class ModelStatusResponse(BaseModel):
    model_version_status: list[ModelVersionStatus]


class KServeModelStatus(BaseModel):
    """KServe v1's `GET /v1/models/{name}`."""

    name: str
    ready: bool


class TensorDim(BaseModel):
    size: str  # an int64, which TF Serving's JSON writes as a string; "-1": any
    name: str = ""


class TensorShape(BaseModel):
    dim: list[TensorDim]
    unknown_rank: bool = False


class TensorInfo(BaseModel):
    dtype: str  # "DT_FLOAT", "DT_STRING", ...
    tensor_shape: TensorShape
    name: str


class SignatureDef(BaseModel):
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = "tensorflow/serving/predict"


class SignatureDefMap(BaseModel):
    signature_def: dict[str, SignatureDef]


class ModelMetadata(BaseModel):
    signature_def: SignatureDefMap


class ModelSpec(BaseModel):
    name: str
    signature_name: str = ""
    version: str


class ModelMetadataResponse(BaseModel):
    """TF Serving's `GET /v1/models/{name}[/versions/{v}]/metadata`: the `serving_default`
    signature, its inputs and outputs with dtype and shape."""

    model_spec: ModelSpec
    metadata: ModelMetadata
