"""What translation and summarization share: texts in, texts out, with generation params
that change results (so items share a batch only with the same params)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from openmaas.tasks.contract import Plan, TaskContract
from openmaas.tasks.tensors import (
    TEXT_INPUT,
    ModelFacts,
    Outputs,
    TensorSpec,
    decode_texts,
    strings,
)
from openmaas.tasks.tensors import typed_param as param


@dataclass(frozen=True, slots=True)
class Seq2SeqParams:
    max_tokens: int = 256
    source_language: str | None = None  # translation only
    target_language: str | None = None
    ratio: float | None = None  # extractive summarization: share of sentences kept


class Seq2SeqTask(TaskContract[Sequence[str], Seq2SeqParams, str]):
    """Base of translation and summarization: subclasses name the model method."""

    v2_input = TEXT_INPUT
    v2_output_names = ("TEXT_OUT",)

    def default_params(self) -> Seq2SeqParams:
        return Seq2SeqParams()

    def method(self, model: object) -> Callable[[Sequence[str], Seq2SeqParams], list[str]]:
        raise NotImplementedError

    def plan(
        self,
        model: object,
        inputs: Sequence[str],
        params: Seq2SeqParams,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        run = self.method(model)
        # Inputs past the model's token limit are cut, never refused (the engine's limits on
        # one item's work, characters and sentences, still refuse).
        return Plan(
            items=inputs,
            run=lambda batch: run(batch, params),
            key=f"{self.name}:{params!r}",
            truncate=True,
        )

    def v2_inputs(self, values: Sequence[bytes]) -> list[str]:
        return decode_texts(values)

    def v2_params(self, parameters: Mapping[str, object]) -> Seq2SeqParams:
        params = Seq2SeqParams(
            source_language=param(parameters, "source_language", str),
            target_language=param(parameters, "target_language", str),
            ratio=param(parameters, "ratio", float),
        )
        max_tokens = param(parameters, "max_tokens", int)
        if max_tokens is not None:
            params = replace(params, max_tokens=max_tokens)
        return params

    def v2_outputs(self, facts: ModelFacts) -> list[TensorSpec]:
        return [TensorSpec("TEXT_OUT", "BYTES", (-1,))]

    def v2_encode(self, results: Sequence[str], facts: ModelFacts) -> Outputs:
        return {"TEXT_OUT": strings(results)}
