"""Triton's binary tensor data extension: the codec of `/v2/.../infer` bodies.

A request or response may carry tensor bytes after the JSON header: the
`Inference-Header-Content-Length` header gives the header's length, and each tensor whose
parameters hold `binary_data_size` takes that many bytes, in tensor order. BYTES elements are
each prefixed by their length (4 bytes, little-endian); numeric tensors are raw little-endian
row-major values. `tritonclient.http` sends inputs and asks for outputs in this form by default.

Example::

    request, tensors = decode_infer_request(body, headers.get(HEADER_LENGTH))
    tensors[0].array  # numpy array; BYTES tensors are object arrays of `bytes`
    encoded = encode_infer_response(InferenceResponse(model_name="m", model_version="1"),
                                    [(Tensor("SCORE", "FP32", scores), True)])
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import ValidationError

from openmaas.errors import InvalidRequest
from openmaas.protocol.common import parse_decimal
from openmaas.protocol.v2 import (
    HEADER_LENGTH,
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    ResponseOutput,
)

# Numeric datatypes and their little-endian numpy types; BYTES is handled apart.
NUMPY_TYPES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES = frozenset({*NUMPY_TYPES, "BYTES"})
# numpy 1.x holds at most 32 dimensions (2.x: 64); no served task needs more than a few.
MAX_TENSOR_DIMS = 32


# -- tensors ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tensor:
    """A decoded tensor: numeric arrays have their datatype's numpy type; BYTES arrays are
    object arrays of `bytes` (inputs) or of `str` / `bytes` (outputs)."""

    name: str
    datatype: str
    array: npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    body: bytes
    header_length: int | None  # set when binary tensors follow the JSON header

    @property
    def media_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


def decode_infer_request(
    body: bytes, header_length: str | None
) -> tuple[InferenceRequest, list[Tensor]]:
    """The request and its input tensors, from a JSON body or a JSON header plus binary data."""
    if header_length is None:
        header, binary = body, b""
    else:
        length = parse_decimal(header_length, maximum=len(body))
        if length is None:
            raise InvalidRequest(
                f"{HEADER_LENGTH}: {header_length!r} is not a length within the "
                f"{len(body)}-byte body"
            )
        header, binary = body[:length], body[length:]
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise InvalidRequest(_validation_message(exc)) from None
    tensors = []
    offset = 0
    for tensor in request.inputs:
        size = _binary_size(tensor.parameters, f"input {tensor.name}")
        if size is not None:
            if offset + size > len(binary):
                raise InvalidRequest(
                    f"input {tensor.name}: binary_data_size {size} runs past the end of the "
                    f"body ({len(binary) - offset} bytes left after the JSON header)"
                )
            array = _from_binary(tensor, binary[offset : offset + size])
            offset += size
        else:
            array = _from_json(tensor)
        tensors.append(Tensor(tensor.name, tensor.datatype, array))
    if offset != len(binary):
        raise InvalidRequest(
            f"the body has {len(binary) - offset} bytes after the last binary input; the sum of "
            f"the inputs' binary_data_size must equal the bytes after the JSON header"
        )
    return request, tensors


def encode_infer_response(
    response: InferenceResponse, outputs: Sequence[tuple[Tensor, bool]]
) -> EncodedResponse:
    """The response body with each output as binary data (True) or JSON data (False)."""
    chunks = []
    wire = []
    for tensor, binary in outputs:
        shape = list(tensor.array.shape)
        if binary:
            raw = _to_binary(tensor)
            chunks.append(raw)
            wire.append(
                ResponseOutput(
                    name=tensor.name,
                    shape=shape,
                    datatype=tensor.datatype,
                    parameters={"binary_data_size": len(raw)},
                )
            )
        else:
            wire.append(
                ResponseOutput(
                    name=tensor.name, shape=shape, datatype=tensor.datatype, data=_to_json(tensor)
                )
            )
    payload = response.model_copy(update={"outputs": wire}).model_dump(exclude_none=True)
    header = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return EncodedResponse(header, None)
    return EncodedResponse(header + b"".join(chunks), len(header))


def wants_binary(parameters: Parameters | None, default: bool) -> bool:
    """A requested output's `binary_data` parameter, else the request-wide default."""
    value = (parameters or {}).get("binary_data", default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"binary_data must be true or false, not {value!r}")
    return value


# -- internals ----------------------------------------------------------------------------------


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return (
            "the inference request header is not valid JSON; binary requests need the "
            f"{HEADER_LENGTH} header giving the JSON part's length"
        )
    location = ".".join(str(part) for part in first["loc"]) or "request"
    return f"{location}: {first['msg']}"


def _binary_size(parameters: Parameters | None, what: str) -> int | None:
    if not parameters:
        return None
    if "shared_memory_region" in parameters:
        raise InvalidRequest(f"{what}: shared memory is not supported; send the data in the body")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidRequest(f"{what}: binary_data_size must be a byte count, not {size!r}")
    return size


def _check_type_and_shape(tensor: RequestInput) -> int:
    if tensor.datatype not in DATATYPES:
        known = ", ".join(sorted(DATATYPES))
        raise InvalidRequest(
            f"input {tensor.name}: datatype {tensor.datatype!r} is not supported (one of {known})"
        )
    if len(tensor.shape) > MAX_TENSOR_DIMS:
        raise InvalidRequest(
            f"input {tensor.name}: {len(tensor.shape)} dimensions; at most {MAX_TENSOR_DIMS}"
        )
    if any(d < 0 for d in tensor.shape):
        raise InvalidRequest(f"input {tensor.name}: shape {tensor.shape} has a negative size")
    return prod(tensor.shape)


def _shaped(array: npt.NDArray[Any], tensor: RequestInput) -> npt.NDArray[Any]:
    # numpy refuses some shapes whose element count matches the data, e.g. an empty tensor
    # with a dimension of 2**62: the client's mistake, not the server's.
    try:
        return array.reshape(tensor.shape)
    except ValueError as exc:
        raise InvalidRequest(f"input {tensor.name}: shape {tensor.shape}: {exc}") from None


def _from_binary(tensor: RequestInput, raw: bytes) -> npt.NDArray[Any]:
    count = _check_type_and_shape(tensor)
    if tensor.datatype == "BYTES":
        elements = _split_bytes(raw, tensor.name)
        if len(elements) != count:
            raise InvalidRequest(
                f"input {tensor.name}: {len(elements)} BYTES elements for shape {tensor.shape} "
                f"({count} elements)"
            )
        return _shaped(_object_array(elements), tensor)
    dtype = np.dtype(NUMPY_TYPES[tensor.datatype])
    if len(raw) != count * dtype.itemsize:
        raise InvalidRequest(
            f"input {tensor.name}: {len(raw)} bytes for {tensor.datatype} shape {tensor.shape} "
            f"(needs {count * dtype.itemsize})"
        )
    return _shaped(np.frombuffer(raw, dtype=dtype), tensor)


def _from_json(tensor: RequestInput) -> npt.NDArray[Any]:
    count = _check_type_and_shape(tensor)
    if tensor.data is None:
        raise InvalidRequest(
            f"input {tensor.name}: no data; send `data` or binary data with binary_data_size"
        )
    flat = _flatten(tensor.data)
    if len(flat) != count:
        raise InvalidRequest(
            f"input {tensor.name}: {len(flat)} data elements for shape {tensor.shape} "
            f"({count} elements)"
        )
    if tensor.datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise InvalidRequest(f"input {tensor.name}: BYTES data in JSON must be strings")
        return _shaped(_object_array([v.encode() for v in flat]), tensor)
    try:
        array = np.asarray(flat, dtype=NUMPY_TYPES[tensor.datatype])
    except (TypeError, ValueError, OverflowError):
        raise InvalidRequest(
            f"input {tensor.name}: data are not {tensor.datatype} values"
        ) from None
    return _shaped(array, tensor)


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _split_bytes(raw: bytes, name: str) -> list[bytes]:
    elements = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidRequest(f"input {name}: BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidRequest(f"input {name}: a BYTES element runs past the tensor's data")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _object_array(elements: list[bytes]) -> npt.NDArray[Any]:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array


def _element_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _to_binary(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        parts = []
        for value in tensor.array.ravel():
            raw = _element_bytes(value)
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    dtype = NUMPY_TYPES[tensor.datatype]
    return np.ascontiguousarray(tensor.array, dtype=dtype).tobytes()


def _to_json(tensor: Tensor) -> object:
    if tensor.datatype == "BYTES":
        return [
            v.decode(errors="replace") if isinstance(v, bytes) else str(v)
            for v in tensor.array.ravel()
        ]
    # orjson writes C-contiguous native-endian arrays (little-endian on the hosts we support).
    return np.ascontiguousarray(tensor.array, dtype=NUMPY_TYPES[tensor.datatype]).ravel()
