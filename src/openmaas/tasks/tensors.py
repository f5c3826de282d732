"""How a task appears in the Open Inference Protocol v2: tensor specs and the conversions
every mapping shares. Plain numpy: the API layer turns these into wire tensors.

Example::

    TEXT_INPUT.name, TEXT_INPUT.shape  # -> ("TEXT", (-1,))
    decode_texts([b"hello"])  # -> ["hello"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from openmaas.errors import InvalidRequest

ParamT = TypeVar("ParamT")

# A v2 output: its name and values (object arrays of bytes/str for BYTES tensors).
Outputs = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor of a task's v2 signature; -1 is a dimension of any size."""

    name: str
    datatype: str  # "BYTES" | "FP32" | ...
    shape: tuple[int, ...]
    # How requests should send it, for error messages.
    description: str = ""


TEXT_INPUT = TensorSpec("TEXT", "BYTES", (-1,), "TEXT (BYTES, shape [N] or [N, 1]: UTF-8 strings)")
AUDIO_INPUT = TensorSpec("AUDIO", "BYTES", (1,), "AUDIO (BYTES, shape [1]: one audio file's bytes)")


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a mapping may know of a model when describing or encoding: the loaded model
    (None when it is not loaded) and the version's recorded params."""

    model: object | None
    params: Mapping[str, Any] = field(default_factory=dict)


def decode_texts(values: Sequence[bytes]) -> list[str]:
    texts = []
    for index, raw in enumerate(values):
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


def decode_audio(values: Sequence[bytes]) -> bytes:
    audio = values[0]
    if not audio:
        raise InvalidRequest("input AUDIO is empty; send the audio file's bytes", param="inputs")
    return audio


def typed_param(parameters: Mapping[str, object], name: str, kind: type[ParamT]) -> ParamT | None:
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


def strings(values: Sequence[str | bytes]) -> npt.NDArray[Any]:
    """A BYTES tensor's values: a one-dimensional object array."""
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array
