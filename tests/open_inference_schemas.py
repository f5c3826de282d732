"""JSON Schemas of the Open Inference Protocol's REST bodies, for validating what `/v2` answers.

No installable package ships the protocol's schema document: KServe's `open_inference_rest.yaml`
lives only in its repository, `kserve` and `tritonclient` carry none, and MLServer's packaged
OpenAPI (`mlserver/rest/openapi/dataplane.json`) has no health bodies and pins a FastAPI older
than ours. So the schemas are written here from the specification's text, each object with the
section it comes from:

* OIP = the Open Inference Protocol, HTTP/REST (kserve/open-inference-protocol,
  `specification/protocol/inference_rest.md`; the same objects as `components.schemas` of its
  `open_inference_rest.yaml`). Fields marked `#optional` there are optional here; every other
  field is required. Objects allow further fields (the protocol lets servers add extensions).
* The repository index and binary tensors are Triton extensions the protocol names: TRITON-REPO
  = `docs/protocol/extension_model_repository.md` ("Index"), TRITON-BINARY =
  `docs/protocol/extension_binary_data.md` (triton-inference-server/server).

One deviation: OIP's "Server Ready Response JSON Object" reads `"live" : $bool`, a copy of the
live object's text; the protocol's table calls it `$ready_server_response`, and KServe's and
MLServer's servers answer `{"ready": ...}`, which is what the schema here requires.

Example::

    validate(response.json(), "metadata_server_response")  # jsonschema.ValidationError if not
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

# OIP "Tensor Data Types" (BF16: Triton's addition, which tritonclient also sends).
DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
    "BF16",
]

_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }


_ERROR = _object({"error": _STRING})

DEFINITIONS: dict[str, Any] = {
    # OIP "Server Live Response JSON Object": {"live": $bool}
    "live_server_response": _object({"live": _BOOLEAN}),
    # OIP "Server Ready Response JSON Object" (see the module's note)
    "ready_server_response": _object({"ready": _BOOLEAN}),
    # OIP "Model Ready Response JSON Object": {"name": $string, "ready": $bool}
    "ready_model_response": _object({"name": _STRING, "ready": _BOOLEAN}),
    # OIP "Server Metadata Response JSON Object"
    "metadata_server_response": _object(
        {"name": _STRING, "version": _STRING, "extensions": {"type": "array", "items": _STRING}}
    ),
    # OIP "Server Metadata Response JSON Error Object"
    "metadata_server_error_response": _ERROR,
    # OIP "Model Metadata Response JSON Object"; "versions" is #optional
    "metadata_model_response": _object(
        {
            "name": _STRING,
            "platform": _STRING,
            "inputs": {"type": "array", "items": {"$ref": "#/$defs/metadata_tensor"}},
            "outputs": {"type": "array", "items": {"$ref": "#/$defs/metadata_tensor"}},
        },
        {"versions": {"type": "array", "items": _STRING}},
    ),
    # OIP $metadata_tensor: shape "[ $number, ... ]", variable-size dimensions as -1
    "metadata_tensor": _object(
        {
            "name": _STRING,
            "datatype": {"enum": DATATYPES},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        }
    ),
    # OIP "Model Metadata Response JSON Error Object"
    "metadata_model_error_response": _ERROR,
    # OIP "Parameters": values are $string, $number or $boolean
    "parameters": {
        "type": "object",
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    },
    # OIP "Tensor Data": row-major, flat or nested arrays of numbers, strings or booleans
    "tensor_data": {
        "type": "array",
        "items": {
            "anyOf": [
                {"$ref": "#/$defs/tensor_data"},
                {"type": ["number", "string", "boolean"]},
            ]
        },
    },
    # OIP "Inference Response JSON Object"; model_version, id and parameters are optional
    # ("id": the identifier given in the request, if any)
    "inference_response": _object(
        {
            "model_name": _STRING,
            "outputs": {"type": "array", "items": {"$ref": "#/$defs/response_output"}},
        },
        {"model_version": _STRING, "id": _STRING, "parameters": {"$ref": "#/$defs/parameters"}},
    ),
    # OIP "Response Output": shape elements are unsigned 64-bit integers
    "response_output": _object(
        {
            "name": _STRING,
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"enum": DATATYPES},
            "data": {"$ref": "#/$defs/tensor_data"},
        },
        {"parameters": {"$ref": "#/$defs/parameters"}},
    ),
    # TRITON-BINARY: the JSON part of a response whose outputs travel as binary data, each
    # output as JSON or binary. A binary one has no "data" and the byte count in
    # parameters.binary_data_size.
    "binary_inference_response": _object(
        {
            "model_name": _STRING,
            "outputs": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"$ref": "#/$defs/response_output"},
                        {"$ref": "#/$defs/binary_response_output"},
                    ]
                },
            },
        },
        {"model_version": _STRING, "id": _STRING, "parameters": {"$ref": "#/$defs/parameters"}},
    ),
    "binary_response_output": {
        "allOf": [
            _object(
                {
                    "name": _STRING,
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"enum": DATATYPES},
                    "parameters": _object({"binary_data_size": {"type": "integer", "minimum": 0}}),
                }
            ),
            {"not": {"required": ["data"]}},
        ]
    },
    # OIP "Inference Response JSON Error Object"
    "inference_error_response": _ERROR,
    # TRITON-REPO "Index": $repository_index_response, "version" #optional. The states are
    # those Triton reports (its ModelReadyState names).
    "repository_index_response": {
        "type": "array",
        "items": _object(
            {
                "name": _STRING,
                "state": {"enum": ["UNKNOWN", "READY", "UNAVAILABLE", "LOADING", "UNLOADING"]},
                "reason": _STRING,
            },
            {"version": _STRING},
        ),
    },
    # TRITON-REPO $repository_index_error_response
    "repository_index_error_response": _ERROR,
}

Draft202012Validator.check_schema({"$defs": DEFINITIONS})


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$defs": DEFINITIONS, "$ref": f"#/$defs/{name}"})


def validate(body: object, name: str) -> None:
    """Raise `jsonschema.ValidationError` unless `body` is a valid `name` object."""
    validator(name).validate(body)
