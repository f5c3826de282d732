"""Token classification (named entities): spans with labels and character offsets into the
text as sent. `/v1/ner`, and v2 (`ENTITIES`: one JSON document per text).

Example::

    served = await engine.infer(TOKEN_CLASSIFICATION, "en-core-web-sm", ["Ada in Paris"],
                                caller=who)
    served.results[0][0].label  # -> "PERSON"
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from openmaas.tasks.contract import Plan, TaskContract
from openmaas.tasks.names import Task
from openmaas.tasks.tensors import (
    TEXT_INPUT,
    ModelFacts,
    Outputs,
    TensorSpec,
    decode_texts,
    strings,
)
from openmaas.tasks.text_input import TokenCounter, keep_text


@dataclass(frozen=True, slots=True)
class Entity:
    text: str
    label: str
    start: int  # character offsets into the input text, end exclusive
    end: int
    score: float | None = None


@runtime_checkable
class EntityExtractor(TokenCounter, Protocol):
    labels: tuple[str, ...]

    def extract_entities(self, texts: Sequence[str]) -> list[list[Entity]]: ...


class TokenClassificationTask(TaskContract[Sequence[str], None, list[Entity]]):
    name = Task.TOKEN_CLASSIFICATION.value
    protocol = EntityExtractor
    cacheable = True
    v2_input = TEXT_INPUT
    v2_output_names = ("ENTITIES",)

    def default_params(self) -> None:
        return None

    def plan(
        self,
        model: EntityExtractor,
        inputs: Sequence[str],
        params: None,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        # Offsets point into the text as sent: only exact repeats share a cache entry.
        return Plan(
            items=inputs,
            run=model.extract_entities,
            key=self.name,
            truncate=truncate,
            cache_as=self.name,
            normalize=keep_text,
        )

    def v2_inputs(self, values: Sequence[bytes]) -> list[str]:
        return decode_texts(values)

    def v2_params(self, parameters: Mapping[str, object]) -> None:
        return None

    def v2_outputs(self, facts: ModelFacts) -> list[TensorSpec]:
        return [TensorSpec("ENTITIES", "BYTES", (-1,))]

    def v2_encode(self, results: Sequence[list[Entity]], facts: ModelFacts) -> Outputs:
        documents = [
            json.dumps(
                [
                    {"text": e.text, "label": e.label, "start": e.start, "end": e.end}
                    | ({} if e.score is None else {"score": e.score})
                    for e in entities
                ],
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
            for entities in results
        ]
        return {"ENTITIES": strings(documents)}


TOKEN_CLASSIFICATION = TokenClassificationTask()
