"""The API process's side of Ray Serve: one Serve application per served model version,
deployed on its first request (or at start, for preloads), and calls to its replicas.

Calls go through Serve deployment handles, which route each to the replica with the shorter
queue (power of two choices) and, while a deployment is at zero replicas, queue it until
Serve has started one (the cold start): the first request waits instead of failing. A call
whose replica dies under it (SIGKILL, a lost node) is sent once more, to another replica:
inference is idempotent. Serve replaces the dead replica on its own.

Example::

    deployments = ServeDeployments(settings)
    deployments.connect()  # ray.init + serve.start, blocking
    answer = await deployments.infer(("default/bert", 1), "embedding", "default", ["hi"], ...)
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import ray
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from openmaas.errors import ModelLoadFailed, ReplicaLost
from openmaas.scaleout.serve_coalesce import Coalescer
from openmaas.scaleout.serve_replica import (
    Answer,
    InferCall,
    ModelReplica,
    ReplicaTag,
    StreamStart,
)
from openmaas.scaleout.serve_settings import DeploymentTable
from openmaas.serving.pool import VersionKey
from openmaas.serving.replicas import Replica, ReplicaSet
from openmaas.settings import Settings
from openmaas.tasks.text_generation import GenerationDelta, GenerationParams

log = logging.getLogger(__name__)

NAMESPACE = "openmaas"
APP_PREFIX = "openmaas-"
T = TypeVar("T")


def app_name(key: VersionKey) -> str:
    """The Serve application of a version: readable, and unique per `project/name:version`
    (the separators are not name characters, so no two keys meet after the replacement)."""
    name, version = key
    return f"{APP_PREFIX}{re.sub(r'[^A-Za-z0-9_.-]', '--', name)}--v{version}"


class ServeDeployments:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = DeploymentTable.parse(settings.ray_deployments)  # bad entries stop start
        # Replicas run the embedded engine: no Ray of their own, nothing preloaded but theirs.
        # The settings travel through the cluster (Serve keeps them to restart replicas): no
        # key secrets a replica does not use; the artifacts' encryption key it needs.
        self.replica_settings = settings.model_copy(
            update={"ray_address": None, "preload": [], "admin_key": None, "key_pepper": None}
        )
        self._handles: dict[VersionKey, DeploymentHandle[Any]] = {}
        self._coalescers: dict[VersionKey, Coalescer[InferCall, Answer]] = {}
        self._deploying: dict[VersionKey, asyncio.Lock] = {}
        self._answered: Counter[str] = Counter()  # replica id -> requests it answered

    # -- lifecycle ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Join the cluster and start Serve there (no HTTP proxy: this process is the front
        door, and calls replicas through handles). Blocking."""
        address = self.settings.ray_address
        ray.init(
            address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR
        )
        serve.start(proxy_location="Disabled")

    def disconnect(self) -> None:
        # The applications stay: other API processes may serve through them, and a restart
        # finds them running. `remove` (unload) deletes one.
        self._handles.clear()
        self._coalescers.clear()
        if ray.is_initialized():
            ray.shutdown()

    # -- deployments -------------------------------------------------------------------------

    async def ensure(self, key: VersionKey) -> DeploymentHandle[Any]:
        """The handle of the version's application, deploying it first if this process has
        not (concurrent first requests deploy once)."""
        handle = self._handles.get(key)
        if handle is not None:
            return handle
        lock = self._deploying.setdefault(key, asyncio.Lock())
        async with lock:
            handle = self._handles.get(key)
            if handle is None:
                handle = await asyncio.to_thread(self._deploy, key)
                self._handles[key] = handle
        return handle

    def _deploy(self, key: VersionKey) -> DeploymentHandle[Any]:
        wanted = self.table.for_model(key[0])
        settings = self.replica_settings
        if wanted.num_gpus > 0 and settings.device == "cpu":
            settings = settings.model_copy(update={"device": "cuda"})
        deployment = serve.deployment(ModelReplica).options(  # type: ignore[attr-defined]
            name="model",
            autoscaling_config=wanted.autoscaling(),
            max_ongoing_requests=wanted.max_ongoing_requests,
            ray_actor_options={"num_cpus": wanted.num_cpus, "num_gpus": wanted.num_gpus},
            health_check_period_s=2.0,
            health_check_timeout_s=30.0,
        )
        try:
            # Returns once the minimum of replicas runs (each has loaded the model).
            return serve.run(deployment.bind(settings, key), name=app_name(key), route_prefix=None)
        except Exception as error:  # Serve words the replica's failure; we keep its words
            log.exception("deploying %s:%s on Ray Serve failed", *key)
            raise ModelLoadFailed(
                f"model '{key[0]}:{key[1]}' did not start on Ray Serve: {error}"
            ) from error

    async def remove(self, key: VersionKey) -> bool:
        """Delete the version's application; False when it ran nowhere."""
        self._handles.pop(key, None)
        self._coalescers.pop(key, None)
        name = app_name(key)
        status = await asyncio.to_thread(serve.status)
        if name not in status.applications:
            return False
        await asyncio.to_thread(serve.delete, name)
        return True

    async def replica_sets(self) -> dict[VersionKey, ReplicaSet]:
        """Every version this process deployed, with its replicas as the controller sees
        them and what each answered of this process's requests."""
        if not self._handles:
            return {}
        details = await asyncio.to_thread(_serve_details)
        applications = details.get("applications") or {}
        found: dict[VersionKey, ReplicaSet] = {}
        for key in list(self._handles):
            wanted = self.table.for_model(key[0])
            deployment = (applications.get(app_name(key)) or {}).get("deployments", {})
            replicas = tuple(
                Replica(
                    id=str(r.get("replica_id")),
                    state=_word(r.get("state")),
                    pid=r.get("pid"),
                    node=r.get("node_ip"),
                    requests=self._answered[str(r.get("replica_id"))],
                )
                for r in (deployment.get("model") or {}).get("replicas", [])
            )
            found[key] = ReplicaSet(
                deployment=app_name(key),
                running=sum(1 for r in replicas if r.state == "RUNNING"),
                min_replicas=wanted.min_replicas,
                max_replicas=wanted.max_replicas,
                replicas=replicas,
            )
        return found

    # -- calls -------------------------------------------------------------------------------

    async def infer(
        self,
        key: VersionKey,
        task: str,
        project: str,
        inputs: Any,
        params: Any,
        truncate: bool,
        background: bool,
        trace: Mapping[str, str] | None = None,
    ) -> Answer:
        """`trace`: the caller's W3C trace context (`tracing.inject_context`), which the
        replica's spans continue."""
        handle = await self.ensure(key)
        call = InferCall(task, project, inputs, params, truncate, background, dict(trace or {}))
        answer = await self._coalescer(key, handle).submit(call)
        self._answered[answer.tag.id] += 1
        if answer.error is not None:
            raise answer.error.rebuild()
        return answer

    def _coalescer(
        self, key: VersionKey, handle: DeploymentHandle[Any]
    ) -> Coalescer[InferCall, Answer]:
        """The version's calls (`serve_coalesce`): coalesced when its deployment has a fixed
        number of replicas and `coalesce` on, else one call per request, none held back (an
        autoscaled deployment: Serve scales on the calls a replica holds, which coalescing
        would hide)."""
        coalescer = self._coalescers.get(key)
        if coalescer is not None:
            return coalescer
        wanted = self.table.for_model(key[0])

        async def send(group: list[InferCall]) -> list[Answer]:
            answers: list[Answer] = await _once_more_on_death(
                key, lambda: handle.infer_many.remote(group)
            )
            return answers

        if wanted.coalesce and wanted.min_replicas == wanted.max_replicas:
            # Two calls a replica: one running, the next one waiting on it, none held back
            # here longer than a call takes. A call no larger than half of what a replica
            # may hold.
            limit, group = 2 * wanted.max_replicas, max(1, wanted.max_ongoing_requests // 2)
        else:
            limit, group = sys.maxsize, 1
        coalescer = Coalescer(send, limit=limit, max_group=group)
        self._coalescers[key] = coalescer
        return coalescer

    async def generate(
        self,
        key: VersionKey,
        project: str,
        params: GenerationParams,
        prompt: str | None,
        messages: Sequence[Mapping[str, str]] | None,
        background: bool,
        trace: Mapping[str, str] | None = None,
    ) -> tuple[ReplicaTag, int, AsyncIterator[GenerationDelta]]:
        """Start a generation: (the replica, the prompt's tokens, the deltas with the first
        already computed). Sent once more if the replica dies before the first token; after
        it, a replica's death ends the stream with `ReplicaLost`."""
        handle = await self.ensure(key)
        streaming = handle.options(stream=True)

        async def start() -> tuple[StreamStart, GenerationDelta | None, Any]:
            stream = streaming.generate.remote(
                project, params, prompt, messages, background, dict(trace or {})
            )
            head: StreamStart = await stream.__anext__()  # type: ignore[union-attr]
            if head.error is not None:
                return head, None, stream
            return head, await stream.__anext__(), stream  # type: ignore[union-attr]

        head, first, stream = await _once_more_on_death(key, start)
        self._answered[head.tag.id] += 1
        if head.error is not None:
            raise head.error.rebuild()
        assert first is not None

        async def deltas() -> AsyncIterator[GenerationDelta]:
            yield first
            try:
                async for delta in stream:
                    yield delta
            except RayActorError as error:
                raise ReplicaLost(
                    f"model '{key[0]}:{key[1]}': its replica died mid-stream; send the request "
                    "again"
                ) from error
            finally:
                stream.cancel()

        return head.tag, head.prompt_tokens, deltas()


async def _once_more_on_death(key: VersionKey, call: Callable[[], Any]) -> Any:
    """Await `call()`; if its replica died, once more (the router has dropped the dead one)."""
    try:
        return await call()
    except RayActorError as first:
        log.warning("a replica of %s:%s died under a request; sending it again: %s", *key, first)
    try:
        return await call()
    except RayActorError as error:
        raise ReplicaLost(
            f"model '{key[0]}:{key[1]}': two replicas died under this request; retry shortly"
        ) from error


def _word(state: Any) -> str:
    """Serve's replica state as its word (`RUNNING`), enum or string."""
    return str(getattr(state, "value", state))


def _serve_details() -> dict[str, Any]:
    """The controller's view of every application, with each replica's id, state and pid
    (`serve.status()` gives counts only)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    return {} if client is None else dict(client.get_serve_details())
