"""The inference engine: router → pool → batcher, with the response cache in front.

One task-generic path serves every task: resolve the model reference, check that the caller
may see the version and that it serves the task, lease the loaded model (loading it if
needed), let the task's contract check the model and plan the request (`tasks.contract`),
answer what the cache holds, and queue the rest on the model's batcher so that items of
concurrent requests share batches. Text generation streams instead (`generate`). The engine
knows no routes: its errors name the parameter and the task, the API layer words them.

Example::

    engine = InferenceEngine(registry, settings, metrics)
    await engine.start()
    served = await engine.infer(EMBEDDING, "all-minilm-l6-v2", ["hello"], caller=SYSTEM)
    served.results[0].shape  # -> (384,)
    await engine.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, overload

import numpy as np

from openmaas.auth.access import can_see, require_caller
from openmaas.auth.entities import SYSTEM, Principal, project_member
from openmaas.errors import InvalidRequest, ModelNotFound, Overloaded, WrongTask
from openmaas.observability.metrics import Metrics
from openmaas.observability.tracing import child_span
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion, RegisteredModel
from openmaas.registry.names import qualified
from openmaas.registry.traffic import TrafficSplit
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.serving.batcher import Batcher, BatchLimits
from openmaas.serving.cache import CacheKey, ResponseCache
from openmaas.serving.pool import ModelPool, PoolLimits, Resident, VersionKey, model_label
from openmaas.serving.priority import background_generation_slots, background_work
from openmaas.serving.replicas import ReplicaSet
from openmaas.serving.rollout import Rollout
from openmaas.serving.router import ModelRouter
from openmaas.serving.sizes import input_chars, size_of
from openmaas.serving.streaming import iterate_in_thread
from openmaas.serving.variants import VariantChoice, serving_variant_id
from openmaas.settings import MiB, Settings
from openmaas.tasks.catalogue import get_task
from openmaas.tasks.contract import Plan, TaskContract
from openmaas.tasks.seq2seq import Seq2SeqParams
from openmaas.tasks.text_generation import (
    TEXT_GENERATION,
    GenerationDelta,
    GenerationParams,
    Generator,
    generation_token_bound,
)
from openmaas.tasks.text_input import limit_tokens, refuse_large_texts, refuse_many_sentences

log = logging.getLogger(__name__)

T = TypeVar("T")
InputsT = TypeVar("InputsT")
ParamsT = TypeVar("ParamsT")

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


class InferenceEngine:
    def __init__(self, registry: Registry, settings: Settings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.router = ModelRouter(registry, ttl_s=settings.resolve_ttl_s)
        # Traffic splits on aliases; the server sets `rollout.on_rollback` (end and audit).
        self.rollout = Rollout(registry, ttl_s=settings.resolve_ttl_s, metrics=metrics)
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
            LoadOptions(
                device=settings.device,
                threads=settings.threads,
                max_input_sentences=settings.max_input_sentences,
                max_audio_seconds=settings.max_audio_seconds,
                max_image_bytes=settings.max_image_mb * MiB,
                max_image_pixels=settings.max_image_pixels,
                chat_template_timeout_s=settings.chat_template_timeout_s,
                max_prompt_chars=settings.max_prompt_chars,
            ),
            open_dependency=self._open_dependency,
            preferred=VariantChoice(registry).preferred if settings.serve_variants else None,
        )
        self.cache = ResponseCache(
            max_entries=settings.cache_max_entries,
            max_bytes=settings.cache_max_mb * MiB,
            metrics=metrics,
        )
        # Tasks answered from the cache: each contract says if they may be, the operator which.
        self.cached_tasks = frozenset(settings.cache_tasks)
        self._generations: dict[VersionKey, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.pool.start()
        for reference in self.settings.preload:
            # The server's own work: preloads see every model, as the system would.
            version = await self.router.resolve(reference, caller=SYSTEM)
            await self.pool.load(version_key(version), pinned=True)

    async def close(self) -> None:
        await self.pool.close()

    # -- models ------------------------------------------------------------------------------

    async def resolve(
        self, reference: str, task: str | None = None, *, caller: Principal
    ) -> ModelVersion:
        """The version `reference` names, if the caller may see it (and, given a task, if
        its recorded task may serve that task). An alias with a traffic split names the
        version the split picks for this request."""
        version, _ = await self._route(reference, task, caller=caller)
        return version

    async def _route(
        self, reference: str, task: str | None, *, caller: Principal
    ) -> tuple[ModelVersion, TrafficSplit | None]:
        """`resolve`, and the split that picked the version (None: no split applies)."""
        with child_span("openmaas.resolve") as span:
            who = require_caller(caller)
            if not reference or not reference.strip():
                raise InvalidRequest("model: give a model name", param="model")
            reference = reference.strip()
            version = await self.router.resolve(reference, caller=who)
            if not can_see(version.project, version.public, who):
                raise ModelNotFound(f"model {version.model!r} not found", param="model")
            if task is not None and version.task not in get_task(task).servable_by():
                # The API layer adds which route needs which model (it knows the routes).
                raise WrongTask(
                    f"model '{reference}' is a {version.task} model", param="model", task=task
                )
            routed = await self.rollout.route(version, reference, task, self.router)
            if span.is_recording():
                span.set_attribute("openmaas.model", f"{routed[0].model}:{routed[0].version}")
            return routed

    async def list_models(
        self, *, caller: Principal
    ) -> list[tuple[str, RegisteredModel, ModelVersion]]:
        """Every registered model the caller may see, as (the reference that names it for the
        caller, the model, the version that reference serves)."""
        who = require_caller(caller)

        def read() -> list[tuple[str, RegisteredModel, ModelVersion]]:
            models = self.registry.list_models(caller=who)
            own = {m.name for m in models if m.project == who.project}
            served = []
            for model in models:
                if model.latest_version is None:
                    continue
                address = _address(model, who, own)
                exact = qualified(model.project, model.name)
                served.append((address, model, self.registry.resolve(exact, caller=who)))
            return served

        return await asyncio.to_thread(read)

    async def list_versions(self, *, caller: Principal) -> list[tuple[str, ModelVersion]]:
        """Every version of every registered model the caller may see, each with the caller's
        name for its model (as `list_models` gives it)."""
        who = require_caller(caller)

        def read() -> list[tuple[str, ModelVersion]]:
            models = self.registry.list_models(caller=who)
            own = {m.name for m in models if m.project == who.project}
            found: list[tuple[str, ModelVersion]] = []
            for model in models:
                address = _address(model, who, own)
                exact = qualified(model.project, model.name)
                with suppress(ModelNotFound):  # deleted since it was listed
                    found += [
                        (address, v) for v in self.registry.store.list_versions(exact, caller=who)
                    ]
            return found

        return await asyncio.to_thread(read)

    async def get_model(self, name: str, *, caller: Principal) -> RegisteredModel:
        """The model `name` (`name` or `project/name`) means to the caller."""
        who = require_caller(caller)
        return await asyncio.to_thread(self.registry.get_model, name, caller=who)

    async def load(self, reference: str, *, caller: Principal) -> ModelVersion:
        version = await self.resolve(reference, caller=caller)
        await self.pool.load(version_key(version))
        return version

    async def unload(self, reference: str, *, caller: Principal) -> ModelVersion:
        """Unload the version now. Inference requests then refuse it (`ModelUnloaded`) until
        `load`, as Triton does, unless the server reloads unloaded models on demand
        (`reload_unloaded`). `ModelNotLoaded` when it was not loaded (it is held all the same)."""
        version = await self.resolve(reference, caller=caller)
        await self.pool.unload(version_key(version), hold=not self.settings.reload_unloaded)
        return version

    def is_loaded(self, version: ModelVersion) -> bool:
        return self.pool.is_loaded(version_key(version))

    async def replica_sets(self) -> dict[VersionKey, ReplicaSet]:
        """Versions served by replicas elsewhere (Ray Serve), by pool key; none here."""
        return {}

    def is_ready(self, version: ModelVersion) -> bool:
        """Servable: loaded, or loaded on its first request (every registered version is,
        unless it was unloaded on request and is held so)."""
        return not self.pool.is_held(version_key(version))

    # -- tasks -------------------------------------------------------------------------------

    def token_bound(
        self, task: TaskContract[InputsT, ParamsT, Any], inputs: InputsT, params: ParamsT | None
    ) -> int:
        """At most how many tokens `infer` will charge for this request, before anything
        runs (what the API reserves against the caller's token limits). InvalidRequest for a
        max_tokens above the server's cap, so that it is refused as such, not as too large."""
        if params is None:
            params = task.default_params()
        self._check_max_tokens(params)
        return task.token_bound(inputs, params)

    def generation_bound(
        self,
        params: GenerationParams,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> int:
        """`token_bound` for `generate`: the prompt's bound plus max_tokens."""
        self._check_max_tokens(params)
        return generation_token_bound(params, prompt=prompt, messages=messages)

    def _check_max_tokens(self, params: object) -> None:
        """Generation and seq2seq params ask for at most `max_generation_tokens` (the audit:
        max_tokens was unbounded on /v1 completions and on /v2 seq2seq)."""
        if not isinstance(params, GenerationParams | Seq2SeqParams):
            return
        cap = self.settings.max_generation_tokens
        if not 1 <= params.max_tokens <= cap:
            raise InvalidRequest(
                f"max_tokens is {params.max_tokens}; this server generates at most {cap} "
                f"tokens per output: send a max_tokens from 1 to {cap}",
                param="max_tokens",
            )

    @overload
    async def infer(
        self,
        task: TaskContract[InputsT, ParamsT, T],
        reference: str,
        inputs: InputsT,
        params: ParamsT | None = None,
        *,
        caller: Principal,
        truncate: bool = False,
    ) -> Served[T]: ...

    @overload
    async def infer(
        self,
        task: str,
        reference: str,
        inputs: Any,
        params: Any = None,
        *,
        caller: Principal,
        truncate: bool = False,
    ) -> Served[Any]: ...

    async def infer(
        self,
        task: TaskContract[Any, Any, Any] | str,
        reference: str,
        inputs: Any,
        params: Any = None,
        *,
        caller: Principal,
        truncate: bool = False,
    ) -> Served[Any]:
        """Results of one task for `inputs`, in input order: resolve → lease → the task's
        checks and plan → cache → batch. `truncate` cuts inputs at the model's limit instead
        of refusing them."""
        require_caller(caller)
        contract = get_task(task) if isinstance(task, str) else task
        version, split = await self._route(reference, contract.name, caller=caller)
        if params is None:
            params = contract.default_params()
        self._check_max_tokens(params)
        if split is None:
            return await self._infer(contract, version, inputs, params, caller, truncate)
        served = await self.rollout.observe(
            split, version, self._infer(contract, version, inputs, params, caller, truncate)
        )
        if self.rollout.wants_shadow(split):
            exact = f"{qualified(split.project, split.model)}:{split.shadow}"

            async def shadow() -> list[Any]:
                version = await self.router.resolve(exact, caller=SYSTEM)
                return (
                    await self._infer(contract, version, inputs, params, caller, truncate)
                ).results

            self.rollout.shadow(split, shadow, served.results)
        return served

    async def _infer(
        self,
        contract: TaskContract[Any, Any, Any],
        version: ModelVersion,
        inputs: Any,
        params: Any,
        caller: Principal,
        truncate: bool,
    ) -> Served[Any]:
        async with self.pool.lease(version_key(version), serving_variant_id(version)) as resident:
            model = resident.model
            contract.check_model(model, resident.label)  # once per lease, not per item
            large = input_chars(inputs) > self.settings.offload_input_chars
            if large:
                # Token-id inputs are decoded here: as large as the text they make.
                plan = await asyncio.to_thread(
                    contract.plan, model, inputs, params, label=resident.label, truncate=truncate
                )
            else:
                plan = contract.plan(model, inputs, params, label=resident.label, truncate=truncate)
            outputs, tokens = await self._run(resident, plan, caller.project)
        results, prompt_tokens = plan.finish(outputs, tokens)
        return Served(version, results, prompt_tokens)

    async def generate(
        self,
        reference: str,
        params: GenerationParams,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
        caller: Principal,
    ) -> Stream:
        """Start streaming a continuation of a prompt or a chat."""
        contract = TEXT_GENERATION
        self._check_max_tokens(params)
        version, split = await self._route(reference, contract.name, caller=caller)
        work = self._generate(contract, version, params, prompt, messages)
        # A split's latency for generation is the time to the first token.
        return await (work if split is None else self.rollout.observe(split, version, work))

    async def _generate(
        self,
        contract: Any,
        version: ModelVersion,
        params: GenerationParams,
        prompt: str | None,
        messages: Sequence[Mapping[str, str]] | None,
    ) -> Stream:
        key = version_key(version)
        active = self._generations.get(key, 0)
        limit = self.settings.max_concurrent_generations
        if background_work.get():
            # Background work leaves online requests the other half of the slots.
            limit = background_generation_slots(limit)
        if active >= limit:
            raise Overloaded(
                f"model '{version.model}:{version.version}' has {active} generations running "
                "or waiting (the limit); retry shortly"
            )
        self._generations[key] = active + 1
        lease = self.pool.lease(key)
        try:
            resident = await lease.__aenter__()
            contract.check_model(resident.model, resident.label)
            model = cast(Generator, resident.model)  # check_model: it serves generation
            # Rendering the chat template and tokenizing are the tenant's CPU work: in the
            # model's thread, where the generation runs next, never on the event loop.
            start = await asyncio.get_running_loop().run_in_executor(
                resident.executor,
                lambda: contract.prompt(model, resident.label, prompt=prompt, messages=messages),
            )
            deltas: AsyncGenerator[GenerationDelta, None] = iterate_in_thread(
                resident.executor, lambda: model.generate(start.text, params)
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

        return Stream(version, start.tokens, rest())

    # -- internals ---------------------------------------------------------------------------

    async def _run(
        self, resident: Resident, plan: Plan, project: str
    ) -> tuple[list[Any], list[int]]:
        """Outputs per item (input order) and the counted tokens. Cache hits are answered
        without tokenizing: an entry keeps the text's token count beside its result. The
        cache is the caller's project's own: a hit would tell one tenant, by its speed,
        what another had sent."""
        if not plan.counts_tokens:
            batcher = self._batcher(resident, plan)
            items = list(plan.items)
            return await batcher.submit_many(
                items, [1] * len(items), background=background_work.get()
            ), []
        texts = plan.texts()
        self._check_items(texts)
        await self._refuse_large(resident, texts)
        batcher = self._batcher(resident, plan)
        model = resident.model
        # Tokenizing, normalizing and hashing cost time in proportion to the text: a large
        # request does them in a worker thread, so the event loop (and every other tenant's
        # request and the probes) keeps running; a small one inline, the hop costing more.
        large = sum(len(t) for t in texts) > self.settings.offload_input_chars
        if plan.cache_as not in self.cached_tasks or not self.cache.enabled:
            if large:
                counts = await asyncio.to_thread(model.count_tokens, list(texts))
            else:
                counts = model.count_tokens(list(texts))
            tokens = self._limit(resident, counts, plan.truncate)
            weights = plan.item_tokens(tokens) if plan.item_tokens else tokens
            return await batcher.submit_many(
                list(plan.items), weights, background=background_work.get()
            ), tokens
        name, number = resident.key
        label = model_label(resident.key)  # the metrics' model label
        task = plan.cache_as
        normalize = plan.normalize

        def cache_keys() -> list[CacheKey]:
            return [self.cache.key(project, name, number, task, "", normalize(t)) for t in texts]

        # Plain calls below the threshold: the embedding hot path takes no coroutine or
        # thread hop more than before.
        keys = await asyncio.to_thread(cache_keys) if large else cache_keys()
        hits: list[tuple[Any, int] | None] = [self.cache.get(k, label, task) for k in keys]
        missing = [i for i, hit in enumerate(hits) if hit is None]
        missing_texts = [texts[i] for i in missing]
        missing_counts: list[int] = []
        if missing and large:
            missing_counts = await asyncio.to_thread(model.count_tokens, missing_texts)
        elif missing:
            missing_counts = model.count_tokens(missing_texts)
        counted = iter(missing_counts)
        raw = [hit[1] if hit is not None else next(counted) for hit in hits]
        tokens = self._limit(resident, raw, plan.truncate)
        results: list[Any] = [hit[0] if hit is not None else None for hit in hits]
        if missing:
            computed = await batcher.submit_many(
                [texts[i] for i in missing],
                [tokens[i] for i in missing],
                background=background_work.get(),
            )
            for i, value in zip(missing, computed, strict=True):
                if isinstance(value, np.ndarray):
                    value = value.copy()  # own row, not a view that keeps the batch alive
                results[i] = value
                self.cache.put(keys[i], (value, raw[i]), size_bytes=size_of(value))
        return results, tokens

    def _check_items(self, texts: Sequence[str]) -> None:
        if len(texts) > self.settings.max_items_per_request:
            raise InvalidRequest(
                f"input: {len(texts)} items; at most {self.settings.max_items_per_request} "
                "per request (OPENMAAS_MAX_ITEMS_PER_REQUEST)",
                param="input",
            )

    async def _refuse_large(self, resident: Resident, texts: Sequence[str]) -> None:
        """Refuse, before anything is counted or queued, a text past the work one item may
        cost: in a batch, it would hold every other caller's items behind it (or fail them)."""
        model = resident.model
        own = model.max_input_chars
        if own is not None and own < self.settings.max_input_chars:
            refuse_large_texts(texts, own, resident.label)
        else:
            refuse_large_texts(
                texts,
                self.settings.max_input_chars,
                resident.label,
                setting="OPENMAAS_MAX_INPUT_CHARS",
            )
        if model.max_input_sentences is not None:
            # Splitting sentences is work in the texts' length: off the event loop.
            counts = await asyncio.to_thread(model.count_sentences, list(texts))
            refuse_many_sentences(counts, model.max_input_sentences, resident.label)

    @staticmethod
    def _limit(resident: Resident, tokens: list[int], truncate: bool) -> list[int]:
        return limit_tokens(tokens, resident.model.max_input_tokens, truncate, resident.label)

    def _batcher(self, resident: Resident, plan: Plan) -> Batcher[Any, Any]:
        # Created by the first plan under its key: later plans under the same key run the
        # same computation (keys carry the params that change results).
        batcher = resident.batchers.get(plan.key)
        if batcher is None:
            batcher = Batcher(
                plan.run,
                _SINGLE if plan.one_at_a_time else self.batch_limits,
                executor=resident.executor,
                observer=self.metrics.batch_observer(model_label(resident.key)),
                name=f"model '{resident.label}'",
            )
            resident.batchers[plan.key] = batcher
        return batcher

    def _open_source(self, name: str, version: int) -> ModelSource:
        # Hash-checked plaintext; a version encrypted at rest comes as a private decrypted
        # copy, which the pool releases once the runtime has loaded it.
        opened = self.registry.open_files(f"{name}:{version}", caller=SYSTEM)
        return ModelSource.from_version(
            opened.version, opened.directory, release_directory=opened.close
        )

    def _open_dependency(self, dependent: VersionKey, reference: str) -> ModelSource:
        """A model the dependent names (a head's encoder), if the dependent's project may see
        it: public or its own. Another project's private model is 'not found', as everywhere,
        or a head could be registered to read out that model's embeddings."""
        owner = self.registry.get_version(*dependent, caller=SYSTEM)
        # Resolved as the dependent's project would: its own model of that name, else public.
        named = self.registry.resolve(reference, caller=project_member(owner.project))
        exact = f"{qualified(named.project, named.model)}:{named.version}"
        opened = self.registry.open_files(exact, caller=SYSTEM)
        return ModelSource.from_version(
            opened.version, opened.directory, release_directory=opened.close
        )


def _address(model: RegisteredModel, caller: Principal, own: set[str]) -> str:
    """The caller's name for `model`: the bare name when it means this model to the caller
    (its own, or a public one it has none of its own called), else `project/name`."""
    bare = model.project == caller.project or (model.public and model.name not in own)
    return model.name if bare else qualified(model.project, model.name)


def version_key(version: ModelVersion) -> VersionKey:
    """The pool's key of a version: its project's name for the model (names are each
    project's own), so two projects' `bert:1` are two residents."""
    return (qualified(version.project, version.model), version.version)
