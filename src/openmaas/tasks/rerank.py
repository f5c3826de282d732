"""Rerank: relevance of documents to a query, in document order. `/v1/rerank`.

A cross-encoder (a model serving `rerank`) scores (query, document) pairs; an embedding
model serves it too, by cosine similarity of the query's and each document's embedding
(those embeddings are cached and batched as embeddings).

Example::

    served = await engine.infer(RERANK, "ms-marco", RerankQuery("tea?", ["green tea", "cars"]),
                                caller=who)
    served.results[0].score  # -> 0.93
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import numpy as np

from openmaas.errors import WrongTask
from openmaas.tasks.contract import Plan, TaskContract
from openmaas.tasks.embedding import Embedder, FloatArray, embedding_plan
from openmaas.tasks.names import Task
from openmaas.tasks.text_input import TokenCounter, text_token_bound, token_bound


@dataclass(frozen=True, slots=True)
class RerankQuery:
    query: str
    documents: Sequence[str]


@dataclass(frozen=True, slots=True)
class RerankScore:
    index: int
    score: float


@runtime_checkable
class PairScorer(TokenCounter, Protocol):
    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Relevance of (query, document) pairs: cross-encoders."""
        ...


def cosine(a: FloatArray, b: FloatArray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / denominator if denominator else 0.0


class RerankTask(TaskContract[RerankQuery, None, RerankScore]):
    name = Task.RERANK.value
    protocol = PairScorer
    # A classifier is accepted at resolve time: it may be a cross-encoder (one output),
    # which only the loaded model tells.
    served_by = frozenset({Task.RERANK.value, Task.EMBEDDING.value, Task.TEXT_CLASSIFICATION.value})

    def default_params(self) -> None:
        return None

    def token_bound(self, inputs: RerankQuery, params: None) -> int:
        # A cross-encoder counts the query once per document, an embedder once: the larger.
        query = text_token_bound(inputs.query)
        return query * max(1, len(inputs.documents)) + token_bound(inputs.documents)

    def check_model(self, model: TokenCounter, label: str) -> None:
        if Task.RERANK in model.tasks or Task.EMBEDDING in model.tasks:
            return
        raise WrongTask(
            f"model '{label}' is a classifier without a relevance score; rerank "
            "needs an embedding model or a cross-encoder (one output)",
            param="model",
            task=self.name,
        )

    def plan(
        self,
        model: PairScorer | Embedder,
        inputs: RerankQuery,
        params: None,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        query, documents = inputs.query, list(inputs.documents)
        texts = [query, *documents]
        if Task.RERANK in model.tasks:
            scorer = cast(PairScorer, model)

            def pair_tokens(tokens: list[int]) -> list[int]:
                return [tokens[0] + t for t in tokens[1:]]

            def scores(outputs: list[float], tokens: list[int]) -> tuple[list[RerankScore], int]:
                weights = pair_tokens(tokens)
                return [RerankScore(i, float(s)) for i, s in enumerate(outputs)], sum(weights)

            return Plan(
                items=[(query, d) for d in documents],
                run=scorer.score_pairs,
                key=self.name,
                truncate=truncate,
                counted=texts,
                item_tokens=pair_tokens,
                finish=scores,
            )
        embedded = embedding_plan(cast(Embedder, model), texts, truncate)

        def similarities(
            vectors: list[FloatArray], tokens: list[int]
        ) -> tuple[list[RerankScore], int]:
            found = [cosine(vectors[0], v) for v in vectors[1:]]
            return [RerankScore(i, float(s)) for i, s in enumerate(found)], sum(tokens)

        return Plan(
            items=embedded.items,
            run=embedded.run,
            key=embedded.key,
            truncate=truncate,
            cache_as=embedded.cache_as,
            finish=similarities,
        )


RERANK = RerankTask()
