"""The inference engine: router → pool → batcher, with the response cache in front.

Every API route calls one method here. Methods resolve the model reference, check that the
version serves the task, lease the loaded model (loading it if needed), validate inputs against
the model (token limits), then queue each input item on the model's batcher so that items of
concurrent requests share batches.

Example::

    engine = InferenceEngine(registry, settings, metrics)
    await engine.start()
    served = await engine.embed("all-minilm-l6-v2", ["hello"])
    served.results[0].shape  # -> (384,)
    await engine.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from openmaas.auth.access import can_see, check_visible, current_principal
from openmaas.errors import InputTooLong, InvalidRequest, ModelNotFound, Overloaded, WrongTask
from openmaas.observability.metrics import Metrics
from openmaas.registry.entities import ModelVersion, RegisteredModel
from openmaas.registry.service import RegistryService
from openmaas.runtimes.base import (
    Entity,
    FloatArray,
    GenerationDelta,
    GenerationParams,
    LabelScore,
    LoadOptions,
    ModelSource,
    Seq2SeqParams,
    Transcription,
    TranscriptionParams,
)
from openmaas.serving.batcher import Batcher, BatchLimits
from openmaas.serving.cache import ResponseCache, normalize_text
from openmaas.serving.pool import ModelPool, PoolLimits, Resident, VersionKey
from openmaas.serving.router import ModelRouter
from openmaas.serving.streaming import iterate_in_thread
from openmaas.settings import MiB, Settings
from openmaas.tasks.names import Task

log = logging.getLogger(__name__)

T = TypeVar("T")

# Which recorded version tasks can serve a request for a task. Rerank also works with an
# embedding model (cosine similarity); a cross-encoder classifier is checked once loaded.
SERVABLE_BY: dict[Task, frozenset[str]] = {
    Task.EMBEDDING: frozenset({Task.EMBEDDING}),
    Task.TEXT_CLASSIFICATION: frozenset({Task.TEXT_CLASSIFICATION}),
    Task.TOKEN_CLASSIFICATION: frozenset({Task.TOKEN_CLASSIFICATION}),
    Task.RERANK: frozenset({Task.RERANK, Task.EMBEDDING, Task.TEXT_CLASSIFICATION}),
    Task.TEXT_GENERATION: frozenset({Task.TEXT_GENERATION}),
    Task.TRANSLATION: frozenset({Task.TRANSLATION}),
    Task.SUMMARIZATION: frozenset({Task.SUMMARIZATION}),
    Task.SPEECH_RECOGNITION: frozenset({Task.SPEECH_RECOGNITION}),
}

# Batch size 1 for work that is one big item (an audio file).
_SINGLE = BatchLimits(max_batch_size=1)


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    """Results in input order, the version that computed them, and the input tokens."""

    version: ModelVersion
    results: list[T]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Stream:
    """A started generation: the first delta is already computed, so errors surface before
    any response is sent."""

    version: ModelVersion
    prompt_tokens: int
    # Consume it to the end or `aclose()` it: closing releases the model for eviction.
    deltas: AsyncGenerator[GenerationDelta, None]


@dataclass(frozen=True, slots=True)
class RerankScore:
    index: int
    score: float


class InferenceEngine:
    def __init__(self, registry: RegistryService, settings: Settings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.router = ModelRouter(registry, ttl_s=settings.resolve_ttl_s)
        self.batch_limits = BatchLimits(
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            refill_wait_ms=settings.refill_wait_ms,
        )
        self.pool = ModelPool(
            self._open_source,
            PoolLimits(
                memory_budget_bytes=settings.memory_budget_mb * MiB,
                idle_unload_s=settings.idle_unload_s,
            ),
            metrics,
            LoadOptions(device=settings.device, threads=settings.threads),
            open_dependency=self._open_dependency,
        )
        self.cache = ResponseCache(
            max_entries=settings.cache_max_entries,
            max_bytes=settings.cache_max_mb * MiB,
            metrics=metrics,
        )
        self.cached_tasks = frozenset(Task(t) for t in settings.cache_tasks)
        self._generations: dict[VersionKey, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.pool.start()
        for reference in self.settings.preload:
            version = await self.router.resolve(reference)
            await self.pool.load(_key(version), pinned=True)

    async def close(self) -> None:
        await self.pool.close()

    # -- models ------------------------------------------------------------------------------

    async def resolve(self, reference: str, task: Task | None = None) -> ModelVersion:
        if not reference or not reference.strip():
            raise InvalidRequest("model: give a model name", param="model")
        version = await self.router.resolve(reference.strip())
        check_visible(version.model, version.project, version.public)
        if task is not None and version.task not in SERVABLE_BY[task]:
            raise WrongTask(
                f"model '{reference}' is a {version.task} model; {_route_hint(task)}",
                param="model",
            )
        return version

    async def list_models(self) -> list[tuple[RegisteredModel, ModelVersion]]:
        """Every registered model with the version its bare name serves."""

        who = current_principal()  # read here: the worker thread has its own context

        def read() -> list[tuple[RegisteredModel, ModelVersion]]:
            served = []
            for model in self.registry.list_models():
                if model.latest_version is not None and can_see(model.project, model.public, who):
                    served.append((model, self.registry.resolve(model.name)))
            return served

        return await asyncio.to_thread(read)

    async def get_model(self, name: str) -> RegisteredModel:
        model = await asyncio.to_thread(self.registry.get_model, name)
        check_visible(model.name, model.project, model.public)
        return model

    async def load(self, reference: str) -> ModelVersion:
        version = await self.resolve(reference)
        await self.pool.load(_key(version))
        return version

    async def unload(self, reference: str) -> ModelVersion:
        version = await self.resolve(reference)
        await self.pool.unload(_key(version))
        return version

    def is_loaded(self, version: ModelVersion) -> bool:
        return self.pool.is_loaded(_key(version))

    # -- tasks -------------------------------------------------------------------------------

    async def embed(
        self,
        reference: str,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        truncate: bool = False,
        dimensions: int | None = None,
    ) -> Served[FloatArray]:
        """Embeddings of texts (or of token-id lists, decoded with the model's tokenizer)."""
        version = await self.resolve(reference, Task.EMBEDDING)
        async with self.pool.lease(_key(version)) as resident:
            model = resident.model
            full = model.embedding_dimensions
            shortenable = model.truncatable_dimensions and full is not None
            if dimensions is not None and dimensions != full and not shortenable:
                raise InvalidRequest(
                    f"dimensions: model '{resident.label}' gives {full}-dimensional "
                    f"embeddings and cannot shorten them; omit dimensions or send {full}",
                    param="dimensions",
                )
            if dimensions is not None and full is not None and dimensions > full:
                raise InvalidRequest(
                    f"dimensions: at most {full} for model '{resident.label}'",
                    param="dimensions",
                )
            texts = [i if isinstance(i, str) else model.detokenize(i) for i in inputs]
            results, tokens = await self._run_cached(
                resident, Task.EMBEDDING, texts, truncate, lambda b: list(model.embed(b))
            )
        if dimensions is not None and dimensions != full:
            results = [_shorten(v, dimensions) for v in results]
        return Served(version, results, sum(tokens))

    async def classify(
        self, reference: str, texts: Sequence[str], *, truncate: bool = False
    ) -> Served[list[LabelScore]]:
        version = await self.resolve(reference, Task.TEXT_CLASSIFICATION)
        async with self.pool.lease(_key(version)) as resident:
            results, tokens = await self._run_cached(
                resident, Task.TEXT_CLASSIFICATION, texts, truncate, resident.model.classify
            )
        return Served(version, results, sum(tokens))

    async def extract_entities(
        self, reference: str, texts: Sequence[str], *, truncate: bool = False
    ) -> Served[list[Entity]]:
        version = await self.resolve(reference, Task.TOKEN_CLASSIFICATION)
        async with self.pool.lease(_key(version)) as resident:
            results, tokens = await self._run_cached(
                resident,
                Task.TOKEN_CLASSIFICATION,
                texts,
                truncate,
                resident.model.extract_entities,
            )
        return Served(version, results, sum(tokens))

    async def translate(
        self, reference: str, texts: Sequence[str], params: Seq2SeqParams
    ) -> Served[str]:
        return await self._seq2seq(reference, Task.TRANSLATION, texts, params)

    async def summarize(
        self, reference: str, texts: Sequence[str], params: Seq2SeqParams
    ) -> Served[str]:
        return await self._seq2seq(reference, Task.SUMMARIZATION, texts, params)

    async def _seq2seq(
        self, reference: str, task: Task, texts: Sequence[str], params: Seq2SeqParams
    ) -> Served[str]:
        version = await self.resolve(reference, task)
        async with self.pool.lease(_key(version)) as resident:
            model = resident.model
            tokens = self._count(resident, texts, truncate=True)
            run = model.translate if task is Task.TRANSLATION else model.summarize
            # Items share a batch only when they share parameters.
            op = f"{task.value}:{params!r}"
            batcher = self._batcher(resident, op, lambda batch: run(batch, params))
            results = await batcher.submit_many(list(texts), tokens)
        return Served(version, results, sum(tokens))

    async def transcribe(
        self, reference: str, audio: bytes, params: TranscriptionParams
    ) -> Served[Transcription]:
        version = await self.resolve(reference, Task.SPEECH_RECOGNITION)
        async with self.pool.lease(_key(version)) as resident:
            model = resident.model
            batcher = self._batcher(
                resident,
                f"transcribe:{params!r}",
                lambda batch: [model.transcribe(audio, params) for audio in batch],
                limits=_SINGLE,
            )
            result = await batcher.submit(audio, 1)
        return Served(version, [result], 0)

    async def rerank(
        self, reference: str, query: str, documents: Sequence[str], *, truncate: bool = True
    ) -> Served[RerankScore]:
        """Scores of documents for the query, in document order."""
        version = await self.resolve(reference, Task.RERANK)
        async with self.pool.lease(_key(version)) as resident:
            model = resident.model
            texts = [query, *documents]
            if Task.RERANK in model.tasks:
                tokens = self._count(resident, texts, truncate)
                pairs = [(query, d) for d in documents]
                batcher = self._batcher(resident, "rerank", model.score_pairs)
                pair_tokens = [tokens[0] + t for t in tokens[1:]]
                scores = await batcher.submit_many(pairs, pair_tokens)
                prompt_tokens = sum(pair_tokens)
            elif Task.EMBEDDING in model.tasks:
                vectors, tokens = await self._run_cached(
                    resident, Task.EMBEDDING, texts, truncate, lambda b: list(model.embed(b))
                )
                scores = [_cosine(vectors[0], v) for v in vectors[1:]]
                prompt_tokens = sum(tokens)
            else:
                raise WrongTask(
                    f"model '{reference}' is a classifier without a relevance score; rerank "
                    "needs an embedding model or a cross-encoder (one output)",
                    param="model",
                )
        results = [RerankScore(i, float(s)) for i, s in enumerate(scores)]
        return Served(version, results, prompt_tokens)

    async def generate(
        self,
        reference: str,
        params: GenerationParams,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> Stream:
        version = await self.resolve(reference, Task.TEXT_GENERATION)
        key = _key(version)
        active = self._generations.get(key, 0)
        if active >= self.settings.max_concurrent_generations:
            raise Overloaded(
                f"model '{version.model}:{version.version}' has {active} generations running "
                "or waiting (the limit); retry shortly"
            )
        self._generations[key] = active + 1
        lease = self.pool.lease(key)
        try:
            resident = await lease.__aenter__()
            model = resident.model
            text: str | list[int]
            if messages is not None:
                text = model.encode_chat(messages)
                prompt_tokens = len(text)
            else:
                text = prompt or ""
                prompt_tokens = model.count_tokens([text])[0]
            limit = model.max_input_tokens
            if limit is not None and prompt_tokens >= limit:
                raise InputTooLong(
                    f"the prompt has {prompt_tokens} tokens; model '{version.model}' has a "
                    f"context of {limit} tokens; shorten the prompt",
                    param="messages" if messages is not None else "prompt",
                )
            deltas: AsyncGenerator[GenerationDelta, None] = iterate_in_thread(
                resident.executor, lambda: model.generate(text, params)
            )
            first = await anext(deltas)
        except BaseException:
            self._generations[key] -= 1
            await lease.__aexit__(None, None, None)
            raise

        async def rest() -> AsyncGenerator[GenerationDelta, None]:
            try:
                yield first
                async for delta in deltas:
                    yield delta
            finally:
                await deltas.aclose()
                self._generations[key] -= 1
                await lease.__aexit__(None, None, None)

        return Stream(version, prompt_tokens, rest())

    # -- internals ---------------------------------------------------------------------------

    def _count(self, resident: Resident, texts: Sequence[str], truncate: bool) -> list[int]:
        """Tokens per text, within the model's limit (or InputTooLong when not truncating)."""
        self._check_items(texts)
        return self._limit(resident, resident.model.count_tokens(list(texts)), truncate)

    def _check_items(self, texts: Sequence[str]) -> None:
        if len(texts) > self.settings.max_items_per_request:
            raise InvalidRequest(
                f"input: {len(texts)} items; at most {self.settings.max_items_per_request} "
                "per request (OPENMAAS_MAX_ITEMS_PER_REQUEST)",
                param="input",
            )

    @staticmethod
    def _limit(resident: Resident, tokens: list[int], truncate: bool) -> list[int]:
        limit = resident.model.max_input_tokens
        if limit is None:
            return tokens
        too_long = next((i for i, t in enumerate(tokens) if t > limit), None)
        if too_long is not None and not truncate:
            raise InputTooLong(
                f"input[{too_long}] has {tokens[too_long]} tokens; model "
                f"'{resident.label}' accepts at most {limit}. Shorten it, or send "
                '"truncate": true to cut it at the limit',
                param="input",
            )
        return [min(t, limit) for t in tokens]

    def _batcher(
        self,
        resident: Resident,
        op: str,
        run: Callable[[list[Any]], Sequence[Any]],
        *,
        limits: BatchLimits | None = None,
    ) -> Batcher[Any, Any]:
        batcher = resident.batchers.get(op)
        if batcher is None:
            batcher = Batcher(
                run,
                limits or self.batch_limits,
                executor=resident.executor,
                observer=self.metrics.batch_observer(resident.key[0]),
                name=f"model '{resident.label}'",
            )
            resident.batchers[op] = batcher
        return batcher

    async def _run_cached(
        self,
        resident: Resident,
        task: Task,
        texts: Sequence[str],
        truncate: bool,
        run: Callable[[list[str]], Sequence[T]],
    ) -> tuple[list[T], list[int]]:
        """Results and token counts per text. Cache hits are answered without tokenizing:
        an entry keeps the text's token count beside its result."""
        self._check_items(texts)
        batcher: Batcher[str, T] = self._batcher(resident, task.value, run)
        model = resident.model
        if task not in self.cached_tasks or not self.cache.enabled:
            tokens = self._limit(resident, model.count_tokens(list(texts)), truncate)
            return await batcher.submit_many(list(texts), tokens), tokens
        name, number = resident.key
        # NER offsets point into the text as sent: only exact repeats share an entry.
        normalize: Callable[[str], str] = (
            (lambda t: t) if task is Task.TOKEN_CLASSIFICATION else normalize_text
        )
        keys = [self.cache.key(name, number, task.value, "", normalize(t)) for t in texts]
        hits: list[tuple[T, int] | None] = [self.cache.get(k, name, task.value) for k in keys]
        missing = [i for i, hit in enumerate(hits) if hit is None]
        counted = iter(model.count_tokens([texts[i] for i in missing]) if missing else [])
        raw = [hit[1] if hit is not None else next(counted) for hit in hits]
        tokens = self._limit(resident, raw, truncate)
        results: list[T | None] = [hit[0] if hit is not None else None for hit in hits]
        if missing:
            computed = await batcher.submit_many(
                [texts[i] for i in missing], [tokens[i] for i in missing]
            )
            for i, value in zip(missing, computed, strict=True):
                if isinstance(value, np.ndarray):
                    value = value.copy()  # own row, not a view that keeps the batch alive
                results[i] = value
                self.cache.put(keys[i], (value, raw[i]), size_bytes=_size_of(value))
        return [r for r in results if r is not None], tokens

    def _open_source(self, name: str, version: int) -> ModelSource:
        # Hash-checked plaintext; a version encrypted at rest comes as a private decrypted
        # copy, which the pool releases once the runtime has loaded it.
        opened = self.registry.open_files(f"{name}:{version}")
        return ModelSource.from_version(
            opened.version, opened.directory, release_directory=opened.close
        )

    def _open_dependency(self, dependent: VersionKey, reference: str) -> ModelSource:
        """A model the dependent names (a head's encoder), if the dependent's project may see
        it: public or its own. Another project's private model is 'not found', as everywhere,
        or a head could be registered to read out that model's embeddings."""
        owner = self.registry.get_version(*dependent)
        named = self.registry.resolve(reference)
        if not (named.public or named.project == owner.project):
            raise ModelNotFound(f"model {named.model!r} not found", param="model")
        opened = self.registry.open_files(reference)
        return ModelSource.from_version(
            opened.version, opened.directory, release_directory=opened.close
        )


def _key(version: ModelVersion) -> VersionKey:
    return (version.model, version.version)


def _shorten(vector: FloatArray, dimensions: int) -> FloatArray:
    """Leading dimensions of a Matryoshka embedding, re-normalized to unit length."""
    head = vector[:dimensions]
    norm = float(np.linalg.norm(head))
    return (head / norm if norm else head).astype(np.float32)


def _cosine(a: FloatArray, b: FloatArray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / denominator if denominator else 0.0


def _size_of(value: object) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, list):
        return 64 * max(1, len(value))
    return 64


_ROUTES: dict[Task, str] = {
    Task.EMBEDDING: "/v1/embeddings needs an embedding model",
    Task.TEXT_CLASSIFICATION: "/v1/classify and /v1/moderations need a text-classification model",
    Task.TOKEN_CLASSIFICATION: "/v1/ner needs a token-classification model",
    Task.RERANK: "/v1/rerank needs an embedding model or a cross-encoder",
    Task.TEXT_GENERATION: "chat and completions need a text-generation model",
    Task.TRANSLATION: "/v1/translate needs a translation model",
    Task.SUMMARIZATION: "/v1/summarize needs a summarization model",
    Task.SPEECH_RECOGNITION: "/v1/audio/transcriptions needs a speech-recognition model",
}


def _route_hint(task: Task) -> str:
    return _ROUTES.get(task, f"this route needs a {task.value} model")
