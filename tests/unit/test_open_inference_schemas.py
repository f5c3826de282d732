"""The Open Inference Protocol schemas the `/v2` tests validate against refuse what the
specification does not allow: a check that passes everything would prove nothing."""

from __future__ import annotations

import pytest
from jsonschema import ValidationError

from tests.open_inference_schemas import validate

OUTPUT = {"name": "EMBEDDING", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1.0]}


@pytest.mark.parametrize(
    ("body", "schema"),
    [
        ({"name": "m", "ready": True}, "ready_model_response"),
        ({"live": True}, "live_server_response"),
        ({"ready": False}, "ready_server_response"),
        ({"model_name": "m", "outputs": [OUTPUT]}, "inference_response"),
        (
            [{"name": "m", "version": "1", "state": "READY", "reason": ""}],
            "repository_index_response",
        ),
        ({"error": "model 'm' not found"}, "metadata_model_error_response"),
    ],
)
def test_what_the_protocol_describes_is_valid(body: object, schema: str) -> None:
    validate(body, schema)


@pytest.mark.parametrize(
    ("body", "schema"),
    [
        ({"ready": True}, "ready_model_response"),  # no name
        ({}, "live_server_response"),
        ({"live": "true"}, "live_server_response"),  # a string, not a boolean
        ({"name": "openmaas", "version": "1"}, "metadata_server_response"),  # no extensions
        ({"name": "m", "platform": "onnx", "inputs": []}, "metadata_model_response"),
        (
            {"name": "m", "platform": "onnx", "inputs": [], "outputs": [{"name": "X"}]},
            "metadata_model_response",
        ),
        ({"model_name": "m"}, "inference_response"),  # no outputs
        (
            {"model_name": "m", "outputs": [{**OUTPUT, "datatype": "FLOAT"}]},
            "inference_response",
        ),
        (
            {"model_name": "m", "outputs": [{k: v for k, v in OUTPUT.items() if k != "data"}]},
            "inference_response",
        ),
        (
            {"model_name": "m", "outputs": [{k: v for k, v in OUTPUT.items() if k != "data"}]},
            "binary_inference_response",  # binary, but without binary_data_size
        ),
        ({"model_name": "m", "outputs": [{**OUTPUT, "data": [{"x": 1}]}]}, "inference_response"),
        ([{"name": "m", "version": "1", "state": "READY"}], "repository_index_response"),
        ([{"name": "m", "state": "GONE", "reason": ""}], "repository_index_response"),
        ({"error": {"message": "x"}}, "inference_error_response"),  # OpenAI's shape
    ],
)
def test_what_it_does_not_is_refused(body: object, schema: str) -> None:
    with pytest.raises(ValidationError):
        validate(body, schema)
