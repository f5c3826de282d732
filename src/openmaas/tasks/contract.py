"""The task contract: everything the engine and the protocol adapters need to know about one
task, so that adding a task is one module here plus a runtime that implements its protocol.

A contract names the task, the recorded version tasks that may serve it, the runtime protocol
a model implements for it, whether its results may be cached, how usage is counted and how it
maps onto v2 tensors. Per request it makes a `Plan`: the items to batch, the function that
runs one batch on the model, and how batch outputs become results. The engine runs every plan
the same way (resolve → lease → plan → cache → batch → finish).

Example::

    class ReverseTask(TaskContract[list[str], None, str]):
        name = "reverse-text"
        protocol = Reverser

        def plan(self, model, inputs, params, *, label, truncate):
            return Plan(items=inputs, run=model.reverse, key=self.name, truncate=truncate)

    register_task(ReverseTask())
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy.typing as npt

from openmaas.errors import InvalidRequest, WrongTask
from openmaas.tasks.tensors import ModelFacts, Outputs, TensorSpec
from openmaas.tasks.text_input import TokenCounter, normalize_text, token_bound

InputsT = TypeVar("InputsT")
ParamsT = TypeVar("ParamsT")
ResultT = TypeVar("ResultT")


def _as_results(outputs: list[Any], tokens: list[int]) -> tuple[list[Any], int]:
    return outputs, sum(tokens)


@dataclass(frozen=True, slots=True)
class Plan:
    """One request's work on one loaded model.

    `items` go through the model's batcher under `key` (items share a batch only under the
    same key: put params that change results in it); `run` computes one batch. `counted`
    are the texts whose tokens are counted, limited and charged (default: the items, when
    they are texts; None: nothing is counted and each item weighs 1); `item_tokens` turns
    their counts into each item's weight for the batch budget. `finish` turns the outputs
    (input order) and the counted tokens into results and the request's prompt tokens.
    """

    items: Sequence[Any]
    run: Callable[[list[Any]], Sequence[Any]]
    key: str
    truncate: bool = False
    counted: Sequence[str] | None = None
    item_tokens: Callable[[list[int]], list[int]] | None = None
    finish: Callable[[list[Any], list[int]], tuple[list[Any], int]] = _as_results
    # Per-item results may be cached under this task name (items must be the counted texts).
    cache_as: str | None = None
    normalize: Callable[[str], str] = normalize_text
    # Batches of one: an item is a whole unit of work (an audio file).
    one_at_a_time: bool = False
    # False: items are not texts (audio); nothing is counted.
    counts_tokens: bool = True

    def texts(self) -> Sequence[str]:
        if self.counted is not None:
            return self.counted
        return self.items


@dataclass(frozen=True, slots=True)
class Usage:
    """What a request consumed, as metered."""

    input_tokens: int = 0
    items: int = 0
    audio_seconds: float = 0.0


class TaskContract(ABC, Generic[InputsT, ParamsT, ResultT]):
    """Base of every task contract; subclasses set the class attributes and `plan`."""

    name: ClassVar[str]
    protocol: ClassVar[type[Any]]  # what a model serving this task implements
    # Recorded version tasks that may serve a request (default: this task only).
    served_by: ClassVar[frozenset[str]] = frozenset()
    # True: per-item results are deterministic and may be cached (settings.cache_tasks).
    cacheable: ClassVar[bool] = False
    # Its input in the v2 protocol; None: the task is not served over v2.
    v2_input: ClassVar[TensorSpec | None] = None
    v2_output_names: ClassVar[tuple[str, ...]] = ()

    def servable_by(self) -> frozenset[str]:
        return self.served_by or frozenset({self.name})

    def default_params(self) -> ParamsT:
        raise InvalidRequest(f"the {self.name} task needs parameters", param="parameters")

    def check_model(self, model: TokenCounter, label: str) -> None:
        """WrongTask unless the loaded model serves this task (checked once per lease)."""
        if self.name not in model.tasks:
            raise wrong_task(model, label, self.name)

    @abstractmethod
    def plan(
        self, model: Any, inputs: InputsT, params: ParamsT, *, label: str, truncate: bool
    ) -> Plan:
        """The request's work on `model` (already checked by `check_model`); `label` names
        the model in messages. Raises InvalidRequest (with `param`) for params the model
        cannot honour."""

    def usage(self, results: Sequence[ResultT], prompt_tokens: int) -> Usage:
        return Usage(input_tokens=prompt_tokens, items=len(results))

    def token_bound(self, inputs: InputsT, params: ParamsT) -> int:
        """At most how many tokens `usage` will charge for these inputs, computed before
        anything runs (the reservation against the caller's token limits). Default: the
        inputs' texts or token ids (`text_input.token_bound`); override where a request
        counts its texts otherwise (rerank's pairs)."""
        return token_bound(inputs)

    # -- the v2 tensor mapping ---------------------------------------------------------------

    def v2_inputs(self, values: Sequence[bytes]) -> InputsT:
        raise NotImplementedError

    def v2_tensor(self, datatype: str, array: npt.NDArray[Any]) -> InputsT | None:
        """The inputs from the whole input tensor, for a task whose tensor is not a batch of
        `v2_input`'s datatype in shape [N] or [N, 1] (images: pixels [N, H, W, C], or encoded
        files); None (the default): the adapter checks that shape and calls `v2_inputs`."""
        return None

    def v2_params(self, parameters: Mapping[str, object]) -> ParamsT:
        return self.default_params()

    def v2_outputs(self, facts: ModelFacts) -> list[TensorSpec]:
        return []

    def v2_encode(self, results: Sequence[ResultT], facts: ModelFacts) -> Outputs:
        raise NotImplementedError


def wrong_task(model: TokenCounter, label: str, task: str) -> WrongTask:
    served = ", ".join(sorted(model.tasks)) or "nothing"
    return WrongTask(f"model '{label}' serves {served}, not {task}", param="model", task=task)
