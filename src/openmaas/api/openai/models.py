"""OpenAI `GET /v1/models` and `GET /v1/models/{id}`: the models this server can serve.

`GET /v1/models/{id}?protocol=tfserving` answers TensorFlow Serving's model status instead
(`?protocol=kserve`: KServe v1's `{"name", "ready"}`), for clients of those protocols, whose
path is OpenAI's; without `protocol` the answer is OpenAI's model card, unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from fastapi import APIRouter, Depends

from openmaas.api.deps import EngineDep, PrincipalDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.tfserving.routes import kserve_status, model_status
from openmaas.protocol.openai import ModelCard, ModelList, ReplicaCard, ReplicaSetCard
from openmaas.protocol.predict import KServeModelStatus, ModelStatusResponse
from openmaas.registry.entities import ModelVersion, RegisteredModel
from openmaas.registry.names import qualified
from openmaas.serving.engine import InferenceEngine, version_key
from openmaas.serving.pool import VersionKey
from openmaas.serving.replicas import ReplicaSet
from openmaas.tasks.names import Task

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/models",
    tags=["openai"],
    dependencies=[Depends(caller)],
)


def _card(
    address: str,
    model: RegisteredModel,
    version: ModelVersion,
    engine: InferenceEngine,
    replicas: Mapping[VersionKey, ReplicaSet],
) -> ModelCard:
    resident = engine.pool.get_loaded(version_key(version))
    remote = replicas.get(version_key(version))
    return ModelCard(
        id=address,
        created=int(model.created_at.timestamp()),
        owned_by=model.created_by or "openmaas",
        task=version.task,
        version=version.version,
        runtime=version.runtime,
        aliases=dict(model.aliases),
        loaded=resident is not None or (remote is not None and remote.running > 0),
        load_seconds=round(resident.load_seconds, 3) if resident else None,
        memory_bytes=resident.model.memory_bytes if resident else None,
        served_by=resident.served_by if resident else None,
        voices=_voices(version, resident.model if resident else None),
        replicas=_replica_card(remote) if remote is not None else None,
    )


def _replica_card(remote: ReplicaSet) -> ReplicaSetCard:
    return ReplicaSetCard(
        deployment=remote.deployment,
        running=remote.running,
        min_replicas=remote.min_replicas,
        max_replicas=remote.max_replicas,
        replicas=[
            ReplicaCard(id=r.id, state=r.state, pid=r.pid, node=r.node, requests=r.requests)
            for r in remote.replicas
        ],
    )


def _voices(version: ModelVersion, loaded: object) -> list[str] | None:
    """A speech model's voices: the loaded model's, else those recorded at registration."""
    if version.task != Task.SPEECH_SYNTHESIS:
        return None
    voices = getattr(loaded, "voices", None) or version.params.get("voices") or []
    return [str(v) for v in voices]


@router.get("")
async def list_models(engine: EngineDep, who: PrincipalDep) -> ModelList:
    served = await engine.list_models(caller=who)
    replicas = await engine.replica_sets()
    return ModelList(data=[_card(a, m, v, engine, replicas) for a, m, v in served])


@router.get("/{model_id:path}")
async def retrieve_model(
    model_id: str,
    engine: EngineDep,
    who: PrincipalDep,
    protocol: Literal["openai", "tfserving", "kserve"] = "openai",
) -> ModelCard | ModelStatusResponse | KServeModelStatus:
    if protocol == "tfserving":
        return await model_status(engine, model_id, who)
    if protocol == "kserve":
        return await kserve_status(engine, model_id, who)
    version = await engine.resolve(model_id, caller=who)
    model = await engine.get_model(qualified(version.project, version.model), caller=who)
    return _card(model_id, model, version, engine, await engine.replica_sets())
