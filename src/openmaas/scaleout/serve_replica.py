"""One replica of a model version on Ray Serve: the embedded engine (pool, batcher, runtimes,
response cache), in a Serve replica process, serving that one version.

The API process (`serve_engine.RayServeEngine`) has already authenticated the caller,
resolved the reference, applied traffic splits and reserved limits; a replica only computes.
It loads its version while it starts, so Serve counts it ready (and routes to it) once the
model is in memory: a request that waits for a cold start waits for a loaded model.

Errors of the platform cross back as `RemoteError` values, rebuilt in the API process as the
same class, so a 400 from a replica is the same 400 as an embedded one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import ray
from opentelemetry.trace import SpanKind
from ray import serve

from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope
from openmaas.errors import OpenMaaSError
from openmaas.observability.metrics import Metrics
from openmaas.observability.tracing import configure_tracing, continued_span
from openmaas.serving.engine import InferenceEngine
from openmaas.serving.pool import VersionKey
from openmaas.serving.priority import background_work
from openmaas.settings import Settings
from openmaas.tasks.text_generation import GenerationDelta, GenerationParams
from openmaas.wiring import build_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InferCall:
    """One request's `ModelReplica.infer` arguments, as `infer_many` takes a group of them."""

    task: str
    project: str
    inputs: Any
    params: Any
    truncate: bool
    background: bool
    trace: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ReplicaTag:
    id: str  # Serve's replica id
    pid: int
    node: str


@dataclass(frozen=True, slots=True)
class RemoteError:
    """A platform error raised in a replica, as plain data (some classes take required
    keyword arguments, which pickling an exception loses)."""

    module: str
    name: str
    message: str
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, error: OpenMaaSError) -> RemoteError:
        kind = type(error)
        return cls(kind.__module__, kind.__qualname__, error.message, dict(vars(error)))

    def rebuild(self) -> OpenMaaSError:
        import importlib

        kind = getattr(importlib.import_module(self.module), self.name)
        error: OpenMaaSError = kind.__new__(kind)
        Exception.__init__(error, self.message)
        vars(error).update(self.state)
        return error


@dataclass(frozen=True, slots=True)
class Answer:
    tag: ReplicaTag
    results: list[Any] = field(default_factory=list)
    prompt_tokens: int = 0
    error: RemoteError | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A generation stream's first message: who serves it and the prompt's tokens."""

    tag: ReplicaTag
    prompt_tokens: int = 0
    error: RemoteError | None = None


def acting_for(project: str) -> Principal:
    """The API process's caller, already authorized there, as the replica acts for it: its
    project (the response cache is each project's own), with the reach to open the version
    the API process resolved for it."""
    return Principal(project=project, key_id=0, prefix="system", scopes=(Scope.ADMIN,))


class ModelReplica:
    """A Serve deployment class (`serve.deployment(ModelReplica)` in `serve_engine`)."""

    async def __init__(self, settings: Settings, key: VersionKey) -> None:  # type: ignore[misc]
        # The replica's spans (queue wait, batch run) go to the API process's collector, in
        # the trace of the request each call carries.
        self.tracing = configure_tracing(settings, service="openmaas-replica")
        self.registry = build_registry(settings)
        self.engine = InferenceEngine(self.registry, settings, Metrics())
        await self.engine.start()
        # Pinned: the replica exists to serve this version; Serve, not the pool, retires it.
        await self.engine.pool.load(key, pinned=True)
        self.reference = f"{key[0]}:{key[1]}"
        context = serve.get_replica_context()
        self.tag = ReplicaTag(
            context.replica_id.unique_id,
            os.getpid(),
            ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
        )

    async def infer(
        self,
        task: str,
        project: str,
        inputs: Any,
        params: Any,
        truncate: bool,
        background: bool,
        trace: Mapping[str, str] | None = None,
    ) -> Answer:
        token = background_work.set(background)
        try:
            with self._span("openmaas.replica.infer", trace, task=task):
                served = await self.engine.infer(
                    task,
                    self.reference,
                    inputs,
                    params,
                    caller=acting_for(project),
                    truncate=truncate,
                )
        except OpenMaaSError as error:
            return Answer(self.tag, error=RemoteError.of(error))
        finally:
            background_work.reset(token)
        return Answer(self.tag, served.results, served.prompt_tokens)

    async def infer_many(self, calls: Sequence[InferCall]) -> list[Answer]:
        """Several requests in one Ray call (`serve_coalesce`), each run as `infer` runs it,
        all at once, so the engine's batcher batches them together; each its own answer."""
        outcomes = await asyncio.gather(
            *(
                self.infer(c.task, c.project, c.inputs, c.params, c.truncate, c.background, c.trace)
                for c in calls
            ),
            return_exceptions=True,
        )
        return [self._answer(outcome) for outcome in outcomes]

    def _answer(self, outcome: Answer | BaseException) -> Answer:
        if isinstance(outcome, Answer):
            return outcome
        # Not a platform error (those are answers already): one request's fault must not
        # fail the others of its call; logged here, a 500 where the request came from.
        log.error("a request to %s failed", self.reference, exc_info=outcome)
        failed = OpenMaaSError(f"model '{self.reference}': the replica failed this request")
        return Answer(self.tag, error=RemoteError.of(failed))

    async def generate(
        self,
        project: str,
        params: GenerationParams,
        prompt: str | None,
        messages: Sequence[Mapping[str, str]] | None,
        background: bool,
        trace: Mapping[str, str] | None = None,
    ) -> AsyncIterator[StreamStart | GenerationDelta]:
        token = background_work.set(background)
        try:
            with self._span("openmaas.replica.generate", trace, task="text-generation"):
                stream = await self.engine.generate(
                    self.reference,
                    params,
                    prompt=prompt,
                    messages=messages,
                    caller=acting_for(project),
                )
        except OpenMaaSError as error:
            yield StreamStart(self.tag, error=RemoteError.of(error))
            return
        finally:
            background_work.reset(token)
        yield StreamStart(self.tag, stream.prompt_tokens)
        try:
            async for delta in stream.deltas:
                yield delta
        finally:
            await stream.deltas.aclose()

    def _span(
        self, name: str, trace: Mapping[str, str] | None, *, task: str
    ) -> AbstractContextManager[object]:
        """A span continuing the caller's trace (its `traceparent`), when this replica
        exports spans and the caller's trace records; else nothing."""
        if self.tracing is None or not trace:
            return nullcontext()
        attributes = {"openmaas.model": self.reference, "openmaas.task": task}
        attributes["openmaas.replica"] = self.tag.id
        return continued_span(name, trace, attributes, kind=SpanKind.SERVER)

    def check_health(self) -> None:
        """Serve's health check: the replica answers while its event loop does."""
