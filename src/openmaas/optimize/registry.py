"""The optimization methods a server offers, by name (each is a `methods.Method`).

Example::

    method = get_method("quantize")  # 400 `unknown_method` naming the others
    if not method.applies_to(version):
        raise InvalidRequest(not_applicable_message(method, version), param="method")
"""

from __future__ import annotations

from collections.abc import Mapping

from openmaas.errors import InvalidRequest
from openmaas.optimize import distill, onnx_methods, prune, truncate
from openmaas.optimize.methods import Method
from openmaas.registry.entities import ModelVersion

METHODS: Mapping[str, Method] = {
    method.name: method
    for method in (
        *onnx_methods.METHODS,
        *truncate.METHODS,
        *prune.METHODS,
        *distill.METHODS,
    )
}


def get_method(name: str) -> Method:
    method = METHODS.get(name)
    if method is None:
        raise InvalidRequest(
            f"unknown method {name!r} (methods: {', '.join(sorted(METHODS))})",
            param="method",
            code="unknown_method",
        )
    return method


def applicable_methods(version: ModelVersion) -> list[str]:
    """The methods that apply to this version, by name."""
    return sorted(name for name, method in METHODS.items() if method.applies_to(version))


def not_applicable_message(method: Method, version: ModelVersion) -> str:
    applicable = applicable_methods(version)
    what = f"{version.model}:{version.version} (a {version.runtime} {version.task} model)"
    if applicable:
        return f"method {method.name!r} does not apply to {what}; methods that do: " + ", ".join(
            applicable
        )
    return (
        f"method {method.name!r} does not apply to {what}, nor does any other method; "
        f"{method.name!r} takes {' or '.join(sorted(method.tasks))} models of runtime "
        f"{' or '.join(sorted(method.runtimes))}"
    )
