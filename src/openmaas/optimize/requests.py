"""What an optimization job request says, and each method's settings, checked up front.

Example::

    request = OptimizationRequest(model="all-minilm-l6-v2", method="quantize")
    settings = check_settings("quantize", {"per_channel": False})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openmaas.errors import InvalidRequest

ONNX = "onnx"
QUANTIZE = "quantize"
# Each method's settings and their defaults.
METHOD_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    # Largest element-wise difference to the parent's outputs (embedding values or class
    # probabilities) that the export may show; optimum's default for BERT-like models.
    ONNX: {"atol": 1e-4},
    # The export step (from a transformers parent) is held to `atol`; the quantized result
    # is measured, not held to a tolerance: the caller decides from the recorded metrics.
    QUANTIZE: {"atol": 1e-4, "per_channel": True, "weight_type": "qint8", "reduce_range": False},
}
# What each method starts from: the parent's runtime.
METHOD_RUNTIMES: Mapping[str, frozenset[str]] = {
    ONNX: frozenset({"transformers"}),
    QUANTIZE: frozenset({"transformers", "onnx"}),
}
TASKS = frozenset({"embedding", "text-classification"})
# The registered name a job derives from its parent's when none is given.
NAME_SUFFIXES: Mapping[str, str] = {ONNX: "onnx", QUANTIZE: "int8"}
WEIGHT_TYPES = ("qint8", "quint8")


@dataclass(frozen=True, slots=True)
class OptimizationRequest:
    model: str  # the parent: a reference (`name`, `name:3`, `name@production`)
    method: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    model_name: str | None = None  # register as this model's next version
    alias: str | None = None


def check_method(method: str) -> None:
    if method not in METHOD_SETTINGS:
        raise InvalidRequest(
            f"unknown method {method!r} (methods: {', '.join(sorted(METHOD_SETTINGS))})",
            param="method",
            code="unknown_method",
        )


def methods_for(runtime: str, task: str) -> list[str]:
    """The methods that apply to a model of this runtime and task."""
    if task not in TASKS:
        return []
    return sorted(name for name, runtimes in METHOD_RUNTIMES.items() if runtime in runtimes)


def check_settings(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The method's settings with defaults filled in; 400 naming a wrong one."""
    defaults = METHOD_SETTINGS[method]
    for name in given:
        if name not in defaults:
            raise InvalidRequest(
                f"method {method!r} has no setting {name!r} (settings: {', '.join(defaults)})",
                param=f"settings.{name}",
            )
    resolved = {**defaults, **given}
    atol = resolved["atol"]
    if isinstance(atol, bool) or not isinstance(atol, int | float) or not 0 < atol <= 1:
        raise InvalidRequest(
            f"settings.atol must be a number above 0 and at most 1, got {atol!r}",
            param="settings.atol",
        )
    resolved["atol"] = float(atol)
    for name in ("per_channel", "reduce_range"):
        if name in resolved and not isinstance(resolved[name], bool):
            raise InvalidRequest(
                f"settings.{name} must be true or false, got {resolved[name]!r}",
                param=f"settings.{name}",
            )
    if "weight_type" in resolved and resolved["weight_type"] not in WEIGHT_TYPES:
        raise InvalidRequest(
            f"settings.weight_type must be one of {', '.join(WEIGHT_TYPES)}, "
            f"got {resolved['weight_type']!r}",
            param="settings.weight_type",
        )
    return resolved
