"""`/v1/fine_tuning/jobs` in OpenAI's shapes, so the stock `openai` client fine-tunes here.

`model` names a recipe (trained from scratch: `textcnn`, ...) or a registered base model
(fine-tuned by the recipe that fits it). The job registers its model as
`<suffix or recipe>-<first 8 hex digits of the job id>` in the caller's project and reports
that name as `fine_tuned_model`, which `/v1/classify` and the other task routes take.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.training import (
    fine_tuning_checkpoint_out,
    fine_tuning_event_out,
    fine_tuning_job_out,
)
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.openai.fine_tuning_adapter import openai_request
from openmaas.api.training_jobs import cancel_and_wait, create_job, training_kind
from openmaas.errors import InvalidRequest
from openmaas.jobs.entities import TRAINING
from openmaas.jobs.publish import registered_by
from openmaas.protocol.training import (
    EVENT_CURSOR_PATTERN,
    FineTuningCheckpointOut,
    FineTuningEventOut,
    FineTuningJobCreate,
    FineTuningJobOut,
    PageOut,
    parse_event_cursor,
)

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/fine_tuning", tags=["training"])

MAX_PAGE = 100


@router.post("/jobs")
async def create_fine_tuning_job(
    body: FineTuningJobCreate, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> FineTuningJobOut:
    if body.method is not None and body.method.type != "supervised":
        raise InvalidRequest(
            f"method {body.method.type!r} is not supported here: only 'supervised'",
            param="method.type",
        )
    if body.integrations:
        raise InvalidRequest(
            "integrations (Weights & Biases) are not supported by this server; follow the "
            "job's events instead",
            param="integrations",
        )
    # The deprecated top-level field, overridden by the method's own (OpenAI's precedence).
    hyperparameters = body.hyperparameters.given() if body.hyperparameters else {}
    supervised = body.method.supervised if body.method else None
    if supervised is not None and supervised.hyperparameters is not None:
        hyperparameters |= supervised.hyperparameters.given()
    options = {"metadata": dict(body.metadata)} if body.metadata else {}
    request = await run_in_threadpool(
        openai_request,
        training_kind(services.jobs),
        caller=principal,
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        hyperparameters=hyperparameters,
        suffix=body.suffix,
        seed=body.seed,
        options=options,
    )
    job = await create_job(services, principal, auditor, request)
    return fine_tuning_job_out(job)


@router.get("/jobs")
def list_fine_tuning_jobs(
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> PageOut[FineTuningJobOut]:
    page = services.jobs.list(caller=principal, kind=TRAINING, after=after, limit=limit)
    return PageOut(data=[fine_tuning_job_out(job) for job in page.items], has_more=page.has_more)


@router.get("/jobs/{fine_tuning_job_id}")
def retrieve_fine_tuning_job(
    fine_tuning_job_id: str, services: ServicesDep, principal: PrincipalDep
) -> FineTuningJobOut:
    return fine_tuning_job_out(
        services.jobs.get(fine_tuning_job_id, caller=principal, kind=TRAINING)
    )


@router.post("/jobs/{fine_tuning_job_id}/cancel")
async def cancel_fine_tuning_job(
    fine_tuning_job_id: str, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> FineTuningJobOut:
    """Answers `cancelled` once the worker has stopped (see `cancel_and_wait`)."""
    job = await cancel_and_wait(services, principal, auditor, fine_tuning_job_id)
    return fine_tuning_job_out(job)


@router.get("/jobs/{fine_tuning_job_id}/events")
def list_fine_tuning_events(
    fine_tuning_job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[
        str | None, Query(pattern=EVENT_CURSOR_PATTERN, description="An event id: ftevent-<n>.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> PageOut[FineTuningEventOut]:
    """Newest first, as OpenAI lists them."""
    cursor = parse_event_cursor(after)
    page = services.jobs.events(
        fine_tuning_job_id, caller=principal, kind=TRAINING, after=cursor, limit=limit
    )
    return PageOut(
        data=[fine_tuning_event_out(event) for event in page.items],
        has_more=page.has_more,
    )


@router.get("/jobs/{fine_tuning_job_id}/checkpoints")
def list_fine_tuning_checkpoints(
    fine_tuning_job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 10,
) -> PageOut[FineTuningCheckpointOut]:
    """Only what serves: once the job has published its model, that version is its one
    checkpoint (`name:version`, which every route takes); before, none. The checkpoints a
    job resumes from hold training state, not a model, and are listed by
    `/v1/training/jobs/{id}/checkpoints`."""
    job = services.jobs.get(fine_tuning_job_id, caller=principal, kind=TRAINING)
    published = registered_by(services.registry, job) if job.fine_tuned_model else None
    if published is None:
        return PageOut(data=[])
    last = services.jobs.checkpoints(
        fine_tuning_job_id, caller=principal, kind=TRAINING, limit=1
    ).items
    offered = fine_tuning_checkpoint_out(job, published, last[0] if last else None)
    return PageOut(data=[] if after == offered.id else [offered])
