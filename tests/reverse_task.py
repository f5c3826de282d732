"""A task the server does not ship: reversing texts. It is a task contract and a runtime,
registered from the test suite, and served by the unchanged engine and routes.

Run as a module it starts the real server with both registered (the server's own process
must know them)::

    python -m tests.reverse_task serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from openmaas.runtimes.base import (
    NATIVE_SPEC,
    RUNTIMES,
    LoadedModel,
    LoadOptions,
    ModelSource,
    Runtime,
    register_runtime,
)
from openmaas.tasks.catalogue import register_task, unregister_task
from openmaas.tasks.contract import Plan, TaskContract
from openmaas.tasks.tensors import (
    TEXT_INPUT,
    ModelFacts,
    Outputs,
    TensorSpec,
    decode_texts,
    strings,
    typed_param,
)
from openmaas.tasks.text_input import TokenCounter

TASK = "reverse-text"
RUNTIME = "reverse"
# A text the runtime breaks on, as a library may on an input it did not expect: the whole
# batch it is in raises (an unexpected error, not a domain error).
POISON = "poison pill"


@runtime_checkable
class Reverser(TokenCounter, Protocol):
    def reverse(self, texts: Sequence[str], shout: bool) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ReverseParams:
    shout: bool = False  # upper-case the result


class ReverseTask(TaskContract[Sequence[str], ReverseParams, str]):
    name = TASK
    protocol = Reverser
    v2_input = TEXT_INPUT
    v2_output_names = ("REVERSED",)

    def default_params(self) -> ReverseParams:
        return ReverseParams()

    def plan(
        self,
        model: Reverser,
        inputs: Sequence[str],
        params: ReverseParams,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        return Plan(
            items=inputs,
            run=lambda batch: model.reverse(batch, params.shout),
            key=f"{self.name}:{params.shout}",
            truncate=truncate,
        )

    def v2_inputs(self, values: Sequence[bytes]) -> list[str]:
        return decode_texts(values)

    def v2_params(self, parameters: Mapping[str, object]) -> ReverseParams:
        return ReverseParams(shout=typed_param(parameters, "shout", bool) or False)

    def v2_outputs(self, facts: ModelFacts) -> list[TensorSpec]:
        return [TensorSpec("REVERSED", "BYTES", (-1,))]

    def v2_encode(self, results: Sequence[str], facts: ModelFacts) -> Outputs:
        return {"REVERSED": strings(results)}


REVERSE_TEXT = ReverseTask()


class ReverseModel(LoadedModel):
    max_input_tokens = 8  # words, as the default count_tokens counts

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.tasks = frozenset({TASK})
        self.memory_bytes = 1024

    def reverse(self, texts: Sequence[str], shout: bool) -> list[str]:
        if POISON in texts:
            raise ValueError(f"the reverser broke on a batch of {len(texts)}")
        reversed_texts = [text[::-1] for text in texts]
        return [t.upper() for t in reversed_texts] if shout else reversed_texts


class ReverseRuntime(Runtime):
    name = RUNTIME
    tasks = frozenset({TASK})

    def load(self, source: ModelSource, options: LoadOptions) -> ReverseModel:
        return ReverseModel(source)


def register() -> None:
    register_task(REVERSE_TEXT)
    register_runtime(RUNTIME, f"{__name__}:ReverseRuntime")


def unregister() -> None:
    unregister_task(TASK)
    RUNTIMES.pop(RUNTIME, None)


def write_model(directory: Path) -> Path:
    """A model directory the registry records as a reverse-text model of this runtime."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"task": TASK, "runtime": RUNTIME, "format": RUNTIME}
    (directory / NATIVE_SPEC).write_text(json.dumps(spec), encoding="utf-8")
    (directory / "README.txt").write_text("reverses texts\n", encoding="utf-8")
    return directory


if __name__ == "__main__":
    from openmaas.cli.main import main

    register()
    main()
