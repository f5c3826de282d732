"""Embedding: texts (or token-id lists) to float32 vectors. OpenAI's `/v1/embeddings`.

`dimensions` shortens the vectors of a Matryoshka-trained model (its leading dimensions,
re-normalised); other models accept only their own width.

Example::

    served = await engine.infer(EMBEDDING, "all-minilm-l6-v2", ["hello"], caller=who)
    served.results[0].shape  # -> (384,)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from openmaas.errors import InvalidRequest
from openmaas.tasks.contract import Plan, TaskContract
from openmaas.tasks.names import Task
from openmaas.tasks.tensors import TEXT_INPUT, ModelFacts, Outputs, TensorSpec, decode_texts
from openmaas.tasks.tensors import typed_param as param
from openmaas.tasks.text_input import TokenCounter

FloatArray = npt.NDArray[np.float32]
EmbeddingInputs = Sequence[str] | Sequence[Sequence[int]]


@runtime_checkable
class Embedder(TokenCounter, Protocol):
    embedding_dimensions: int | None
    # True when leading dimensions of an embedding are a valid smaller embedding
    # (Matryoshka-trained), so `dimensions` may truncate.
    truncatable_dimensions: bool

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """(len(texts), embedding_dimensions) float32. Inputs longer than `max_input_tokens`
        are truncated (the engine refuses them first when the caller turned truncation off)."""
        ...

    def detokenize(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True, slots=True)
class EmbeddingParams:
    dimensions: int | None = None


def check_dimensions(model: Embedder, dimensions: int | None, label: str) -> None:
    full = model.embedding_dimensions
    shortenable = model.truncatable_dimensions and full is not None
    if dimensions is not None and dimensions != full and not shortenable:
        raise InvalidRequest(
            f"dimensions: model '{label}' gives {full}-dimensional "
            f"embeddings and cannot shorten them; omit dimensions or send {full}",
            param="dimensions",
        )
    if dimensions is not None and full is not None and dimensions > full:
        raise InvalidRequest(
            f"dimensions: at most {full} for model '{label}'",
            param="dimensions",
        )


def embedding_plan(model: Embedder, texts: Sequence[str], truncate: bool) -> Plan:
    """Embeddings of texts, cached per text as embeddings (rerank's fallback shares it)."""
    return Plan(
        items=texts,
        run=lambda batch: list(model.embed(batch)),
        key=Task.EMBEDDING.value,
        truncate=truncate,
        cache_as=Task.EMBEDDING.value,
    )


def shorten(vector: FloatArray, dimensions: int) -> FloatArray:
    """Leading dimensions of a Matryoshka embedding, re-normalized to unit length."""
    head = vector[:dimensions]
    norm = float(np.linalg.norm(head))
    return (head / norm if norm else head).astype(np.float32)


class EmbeddingTask(TaskContract[EmbeddingInputs, EmbeddingParams, FloatArray]):
    name = Task.EMBEDDING.value
    protocol = Embedder
    cacheable = True
    v2_input = TEXT_INPUT
    v2_output_names = ("EMBEDDING",)

    def default_params(self) -> EmbeddingParams:
        return EmbeddingParams()

    def plan(
        self,
        model: Embedder,
        inputs: EmbeddingInputs,
        params: EmbeddingParams,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        check_dimensions(model, params.dimensions, label)
        texts = [i if isinstance(i, str) else model.detokenize(i) for i in inputs]
        plan = embedding_plan(model, texts, truncate)
        dimensions = params.dimensions
        if dimensions is None or dimensions == model.embedding_dimensions:
            return plan

        def finish(vectors: list[FloatArray], tokens: list[int]) -> tuple[list[FloatArray], int]:
            return [shorten(v, dimensions) for v in vectors], sum(tokens)

        return Plan(
            items=plan.items,
            run=plan.run,
            key=plan.key,
            truncate=truncate,
            cache_as=plan.cache_as,
            finish=finish,
        )

    def v2_inputs(self, values: Sequence[bytes]) -> list[str]:
        return decode_texts(values)

    def v2_params(self, parameters: Mapping[str, object]) -> EmbeddingParams:
        return EmbeddingParams(dimensions=param(parameters, "dimensions", int))

    def v2_outputs(self, facts: ModelFacts) -> list[TensorSpec]:
        loaded = getattr(facts.model, "embedding_dimensions", None)
        dimensions = loaded or facts.params.get("dimensions")
        return [TensorSpec("EMBEDDING", "FP32", (-1, int(dimensions or -1)))]

    def v2_encode(self, results: Sequence[FloatArray], facts: ModelFacts) -> Outputs:
        return {"EMBEDDING": np.stack(results).astype(np.float32, copy=False)}


EMBEDDING = EmbeddingTask()
