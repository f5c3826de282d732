"""The inference engine of an API process that serves models on Ray Serve.

Everything in front of the model stays here, as in the embedded engine it extends: the
caller, resolving the reference, traffic splits and their shadow traffic, the max_tokens cap
(and, in the API layer around it, auth, limits and metering). What the embedded engine does
with its pool and batcher — lease the model, plan, batch, run — a replica of the version's
Serve deployment does instead (`serve_replica.ModelReplica`, the same engine inside).

Example::

    engine = RayServeEngine(registry, settings, metrics)  # settings.ray_address set
    await engine.start()  # joins the cluster, deploys the preloads
    served = await engine.infer(EMBEDDING, "all-minilm-l6-v2", ["hello"], caller=SYSTEM)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.errors import ModelNotLoaded
from openmaas.observability.metrics import Metrics
from openmaas.observability.tracing import inject_context
from openmaas.registry.composition import Registry
from openmaas.registry.entities import ModelVersion
from openmaas.scaleout.serve_deployments import ServeDeployments
from openmaas.serving.engine import InferenceEngine, Served, Stream, version_key
from openmaas.serving.pool import VersionKey
from openmaas.serving.priority import background_work
from openmaas.serving.replicas import ReplicaSet
from openmaas.settings import Settings
from openmaas.tasks.contract import TaskContract
from openmaas.tasks.text_generation import GenerationParams

# The project a generation runs for (the embedded `_generate` takes no caller).
_generating_for: ContextVar[str] = ContextVar("openmaas_generating_for", default="default")


class RayServeEngine(InferenceEngine):
    def __init__(self, registry: Registry, settings: Settings, metrics: Metrics) -> None:
        super().__init__(registry, settings, metrics)
        self.deployments = ServeDeployments(settings)

    async def start(self) -> None:
        await asyncio.to_thread(self.deployments.connect)
        self.pool.start()  # holds nothing here; started so that `close` has one to close
        for reference in self.settings.preload:
            version = await self.router.resolve(reference, caller=SYSTEM)
            await self.deployments.ensure(version_key(version))

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self.deployments.disconnect)

    async def load(self, reference: str, *, caller: Principal) -> ModelVersion:
        version = await self.resolve(reference, caller=caller)
        await self.deployments.ensure(version_key(version))
        return version

    async def unload(self, reference: str, *, caller: Principal) -> ModelVersion:
        """Delete the version's deployment; its next request deploys it again."""
        version = await self.resolve(reference, caller=caller)
        if not await self.deployments.remove(version_key(version)):
            raise ModelNotLoaded(f"model '{reference}' is not deployed on Ray Serve", param="model")
        return version

    async def replica_sets(self) -> dict[VersionKey, ReplicaSet]:
        return await self.deployments.replica_sets()

    async def _infer(
        self,
        contract: TaskContract[Any, Any, Any],
        version: ModelVersion,
        inputs: Any,
        params: Any,
        caller: Principal,
        truncate: bool,
    ) -> Served[Any]:
        answer = await self.deployments.infer(
            version_key(version),
            contract.name,
            caller.project,
            inputs,
            params,
            truncate,
            background_work.get(),
            inject_context(),
        )
        return Served(version, answer.results, answer.prompt_tokens)

    async def generate(
        self,
        reference: str,
        params: GenerationParams,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
        caller: Principal,
    ) -> Stream:
        token = _generating_for.set(caller.project)
        try:
            return await super().generate(
                reference, params, prompt=prompt, messages=messages, caller=caller
            )
        finally:
            _generating_for.reset(token)

    async def _generate(
        self,
        contract: Any,
        version: ModelVersion,
        params: GenerationParams,
        prompt: str | None,
        messages: Sequence[Mapping[str, str]] | None,
    ) -> Stream:
        # The replica's engine holds the generation slots (OPENMAAS_MAX_CONCURRENT_GENERATIONS
        # per replica) and renders the prompt; the caller's project rides along.
        _, prompt_tokens, deltas = await self.deployments.generate(
            version_key(version),
            _generating_for.get(),
            params,
            prompt,
            messages,
            background_work.get(),
            inject_context(),
        )
        return Stream(version, prompt_tokens, deltas)  # type: ignore[arg-type]
