"""The Open Inference Protocol v2 over task contracts: which tensors a model takes and gives,
and one inference path for every task that declares a v2 mapping (`TaskContract.v2_*`).
Generic: a task registered at run time (`tasks.catalogue.register_task`) is served over v2
with no change here or in the routes.

Example::

    contract = v2_contract(version)  # or WrongTask for a task without tensors
    outputs = await run_inference(engine, request, version, contract, tensors, {}, who)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import Request

from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.v2.tensors import Tensor, wants_binary
from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest, WrongTask
from openmaas.protocol.v2 import InferenceRequest, MetadataTensor, Parameters
from openmaas.registry.entities import ModelVersion
from openmaas.serving.engine import InferenceEngine, version_key
from openmaas.tasks.catalogue import find_task, registered_tasks
from openmaas.tasks.contract import TaskContract
from openmaas.tasks.tensors import ModelFacts, TensorSpec, typed_param
from openmaas.tasks.text_classification import known_labels

AnyContract = TaskContract[Any, Any, Any]


def v2_contract(version: ModelVersion) -> AnyContract:
    """The contract of the version's task, if that task has v2 tensors."""
    contract = find_task(version.task)
    if contract is None or contract.v2_input is None:
        served = ", ".join(c.name for c in registered_tasks() if c.v2_input is not None)
        raise WrongTask(
            f"model '{version.model}' is a {version.task} model; the v2 protocol here serves "
            f"{served} models (use the /v1 routes for the others)",
            param="model",
        )
    return contract


def facts(engine: InferenceEngine, version: ModelVersion) -> ModelFacts:
    resident = engine.pool.get_loaded(version_key(version))
    return ModelFacts(resident.model if resident is not None else None, version.params)


def input_tensors(version: ModelVersion) -> list[MetadataTensor]:
    contract = find_task(version.task)
    if contract is None or contract.v2_input is None:
        return []
    return [_metadata(contract.v2_input)]


def output_tensors(version: ModelVersion, known: ModelFacts) -> list[MetadataTensor]:
    contract = find_task(version.task)
    if contract is None or contract.v2_input is None:
        return []
    return [_metadata(spec) for spec in contract.v2_outputs(known)]


def model_parameters(version: ModelVersion, known: ModelFacts) -> Parameters:
    # v2 parameter values are scalars: the label order of SCORES travels as a JSON array text.
    parameters: Parameters = {"task": version.task}
    labels = known_labels(known)
    if labels:
        parameters["labels"] = orjson.dumps(list(labels)).decode()
    return parameters


async def run_inference(
    engine: InferenceEngine,
    request: Request,
    version: ModelVersion,
    contract: AnyContract,
    tensors: Sequence[Tensor],
    parameters: Parameters,
    caller: Principal,
) -> list[Tensor]:
    """The task's output tensors for the request's input tensor, metered."""
    assert contract.v2_input is not None  # v2_contract checked it
    tensor = _named_input(tensors, version, contract.v2_input)
    inputs = contract.v2_tensor(tensor.datatype, tensor.array)
    if inputs is None:
        _check_batch(tensor, version, contract.v2_input)
        inputs = contract.v2_inputs(list(tensor.array.ravel()))
    truncate = typed_param(parameters, "truncate", bool) or False
    params = contract.v2_params(parameters)
    await reserve_tokens(request, lambda: engine.token_bound(contract, inputs, params))
    reference = f"{version.model}:{version.version}"  # as resolved: an alias move cannot race
    served = await engine.infer(
        contract, reference, inputs, params, caller=caller, truncate=truncate
    )
    usage = contract.usage(served.results, served.prompt_tokens)
    meter(
        request,
        served.version,
        input_tokens=usage.input_tokens,
        items=usage.items,
        audio_seconds=usage.audio_seconds,
    )
    known = facts(engine, version)
    datatypes = {spec.name: spec.datatype for spec in contract.v2_outputs(known)}
    encoded = contract.v2_encode(served.results, known)
    return [Tensor(name, datatypes[name], array) for name, array in encoded.items()]


def requested_outputs(
    request: InferenceRequest, version: ModelVersion, contract: AnyContract
) -> list[tuple[str, bool]]:
    """(output name, as binary) in response order: the requested outputs, else all of them."""
    default = (request.parameters or {}).get("binary_data_output", False) is True
    names = contract.v2_output_names
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


def _metadata(spec: TensorSpec) -> MetadataTensor:
    return MetadataTensor(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


def _expected(version: ModelVersion, spec: TensorSpec) -> tuple[str, str]:
    label = f"'{version.model}' ({version.task})"
    return label, spec.description or f"{spec.name} ({spec.datatype}, shape {list(spec.shape)})"


def _named_input(tensors: Sequence[Tensor], version: ModelVersion, spec: TensorSpec) -> Tensor:
    label, expected = _expected(version, spec)
    names = [t.name for t in tensors]
    if names != [spec.name]:
        got = ", ".join(names) or "none"
        raise InvalidRequest(
            f"model {label} takes one input, {expected}; got {got}", param="inputs"
        )
    return tensors[0]


def _check_batch(tensor: Tensor, version: ModelVersion, spec: TensorSpec) -> None:
    label, expected = _expected(version, spec)
    if tensor.datatype != spec.datatype:
        raise InvalidRequest(
            f"input {spec.name} has datatype {tensor.datatype}; model {label} expects {expected}",
            param="inputs",
        )
    shape = tensor.array.shape
    if spec.shape == (1,):  # one item (an audio file)
        fits = tensor.array.size == 1 and len(shape) in (1, 2)
    else:  # a batch: [N] or [N, 1]
        fits = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    if not fits or tensor.array.size == 0:
        raise InvalidRequest(
            f"input {spec.name} has shape {list(shape)}; model {label} expects {expected}",
            param="inputs",
        )
