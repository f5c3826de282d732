"""The servable tasks by name: the built-in contracts, and any a deployment (or a test)
registers. The set is open: the engine and the v2 adapter serve whatever is registered here.

Example::

    register_task(ReverseTask())
    get_task("reverse-text").name  # -> "reverse-text"
"""

from __future__ import annotations

import inspect
from typing import Any

from openmaas.errors import InvalidRequest
from openmaas.tasks.contract import TaskContract
from openmaas.tasks.embedding import EMBEDDING
from openmaas.tasks.explanation import EXPLANATION
from openmaas.tasks.image_classification import IMAGE_CLASSIFICATION
from openmaas.tasks.image_explanation import IMAGE_EXPLANATION
from openmaas.tasks.rerank import RERANK
from openmaas.tasks.speech_recognition import SPEECH_RECOGNITION
from openmaas.tasks.speech_synthesis import SPEECH_SYNTHESIS
from openmaas.tasks.summarization import SUMMARIZATION
from openmaas.tasks.text_classification import TEXT_CLASSIFICATION
from openmaas.tasks.text_generation import TEXT_GENERATION
from openmaas.tasks.text_input import TokenCounter
from openmaas.tasks.token_classification import TOKEN_CLASSIFICATION
from openmaas.tasks.translation import TRANSLATION

AnyContract = TaskContract[Any, Any, Any]

_CONTRACTS: dict[str, AnyContract] = {
    contract.name: contract
    for contract in (
        EMBEDDING,
        TEXT_CLASSIFICATION,
        TOKEN_CLASSIFICATION,
        RERANK,
        TEXT_GENERATION,
        TRANSLATION,
        SUMMARIZATION,
        SPEECH_RECOGNITION,
        EXPLANATION,
        SPEECH_SYNTHESIS,
        IMAGE_CLASSIFICATION,
        IMAGE_EXPLANATION,
    )
}


def register_task(contract: AnyContract) -> None:
    """Serve a task (replacing a contract of the same name)."""
    _CONTRACTS[contract.name] = contract


def unregister_task(name: str) -> None:
    _CONTRACTS.pop(name, None)


def find_task(name: str) -> AnyContract | None:
    return _CONTRACTS.get(name)


def get_task(name: str) -> AnyContract:
    contract = _CONTRACTS.get(name)
    if contract is None:
        known = ", ".join(sorted(_CONTRACTS))
        raise InvalidRequest(f"no task '{name}' (this server serves: {known})", param="task")
    return contract


def registered_tasks() -> list[AnyContract]:
    return list(_CONTRACTS.values())


def _protocols(contract: AnyContract) -> list[type[Any]]:
    return [
        protocol
        for protocol in contract.protocol.__mro__
        if protocol.__dict__.get("_is_protocol") and protocol.__name__ != "Protocol"
    ]


def protocol_methods(contract: AnyContract) -> list[str]:
    """The methods a model implements for the task (those of `TokenCounter` aside)."""
    return [
        name
        for protocol in _protocols(contract)
        if protocol is not TokenCounter
        for name, value in vars(protocol).items()
        if callable(value) and not name.startswith("_")
    ]


def implements(model: object, contract: AnyContract) -> bool:
    """Whether the model defines every member of the task's protocol (methods and data, as
    the model's class or the model itself holds them)."""
    members = {
        name
        for protocol in _protocols(contract)
        for name in (*vars(protocol).get("__annotations__", {}), *vars(protocol))
        if not name.startswith("_")
    }
    missing = object()
    return all(inspect.getattr_static(model, name, missing) is not missing for name in members)


def task_of_method(name: str) -> str | None:
    """The task whose runtime protocol has a method of this name (`embed` → embedding)."""
    for contract in _CONTRACTS.values():
        if name in protocol_methods(contract):
            return contract.name
    return None
