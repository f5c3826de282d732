"""OpenAI `GET /v1/models` and `GET /v1/models/{id}`: the models this server can serve."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from openmaas.api.deps import EngineDep, caller
from openmaas.api.protocol.openai import ModelCard, ModelList
from openmaas.registry.entities import ModelVersion, RegisteredModel

router = APIRouter(prefix="/v1/models", tags=["openai"], dependencies=[Depends(caller)])


def _card(model: RegisteredModel, version: ModelVersion, loaded: bool) -> ModelCard:
    return ModelCard(
        id=model.name,
        created=int(model.created_at.timestamp()),
        owned_by=model.created_by or "openmaas",
        task=version.task,
        version=version.version,
        runtime=version.runtime,
        aliases=dict(model.aliases),
        loaded=loaded,
    )


@router.get("")
async def list_models(engine: EngineDep) -> ModelList:
    served = await engine.list_models()
    return ModelList(data=[_card(m, v, engine.is_loaded(v)) for m, v in served])


@router.get("/{model_id:path}")
async def retrieve_model(model_id: str, engine: EngineDep) -> ModelCard:
    version = await engine.resolve(model_id)
    model = await engine.get_model(version.model)
    card = _card(model, version, engine.is_loaded(version))
    return card.model_copy(update={"id": model_id})
