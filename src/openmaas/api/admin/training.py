"""`/v1/training/jobs`: training jobs with everything a recipe takes (our richer API). The
create and cancel steps, shared with `/v1/fine_tuning/jobs`, are in `api/training_jobs.py`.

Jobs belong to the caller's project: another project's job answers 404 as if it did not
exist (admins see every job). Creating one counts against the project's
`training_jobs_per_day`; creating and cancelling are audited (`jobs/<id>`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from starlette.responses import StreamingResponse

from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.training import (
    recipe_out,
    training_checkpoint_out,
    training_job_out,
    trials_out,
)
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.job_event_stream import job_event_stream
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.training_jobs import (
    MAX_EVENTS_PAGE,
    AfterEvent,
    EventLimit,
    EventOrder,
    cancel_job,
    create_job,
    events_page,
    training_kind,
)
from openmaas.jobs.entities import SEARCH, TRAINING
from openmaas.protocol.training import (
    PageOut,
    RecipeOut,
    TrainingCheckpointOut,
    TrainingEventOut,
    TrainingJobCreate,
    TrainingJobOut,
    TrialOut,
)
from openmaas.training.requests import EarlyStopping, JobRequest
from openmaas.training.search_runner import TRIAL_EVENT

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/training", tags=["training"])

MAX_PAGE = 100
# The jobs these routes serve: trainings, and searches (trainings of many trials).
TRAINING_KINDS = (TRAINING, SEARCH)


@router.get("/recipes")
def list_recipes(services: ServicesDep) -> PageOut[RecipeOut]:
    """The recipes this server trains with, their tasks and default hyperparameters."""
    recipes = sorted(training_kind(services.jobs).recipes.values(), key=lambda r: r.name)
    return PageOut(data=[recipe_out(recipe) for recipe in recipes])


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
async def create_training_job(
    body: TrainingJobCreate, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> TrainingJobOut:
    stopping = body.early_stopping
    request = JobRequest(
        training_file=body.training_file,
        recipe=body.recipe,
        base_model=body.base_model,
        task=body.task,
        validation_file=body.validation_file,
        hyperparameters=body.hyperparameters,
        early_stopping=(
            EarlyStopping(stopping.patience, stopping.min_delta, stopping.metric)
            if stopping is not None
            else None
        ),
        class_imbalance=body.class_imbalance,
        suffix=body.suffix,
        seed=body.seed,
        model_name=body.model_name,
        alias=body.alias,
        validation_split=body.validation_split,
        test_split=body.test_split,
        search=body.search.model_dump(exclude_none=True) if body.search is not None else None,
        cross_validation=body.cross_validation,
        cross_validation_final=body.cross_validation_final,
        resources=body.resources.model_dump() if body.resources is not None else None,
    )
    kind = SEARCH if body.search is not None else TRAINING
    job = await create_job(services, principal, auditor, request, kind=kind)
    return training_job_out(job)


@router.get("/jobs")
def list_training_jobs(
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=64, description="Last id of a page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> PageOut[TrainingJobOut]:
    """Newest first."""
    page = services.jobs.list(caller=principal, kind=TRAINING_KINDS, after=after, limit=limit)
    return PageOut(data=[training_job_out(job) for job in page.items], has_more=page.has_more)


@router.get("/jobs/{job_id}")
def get_training_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> TrainingJobOut:
    return training_job_out(services.jobs.get(job_id, caller=principal, kind=TRAINING_KINDS))


@router.post("/jobs/{job_id}/cancel")
def cancel_training_job(
    job_id: str, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> TrainingJobOut:
    """A job not started yet is cancelled at once; a running one stops within seconds and
    keeps its last checkpoint."""
    return training_job_out(cancel_job(services, principal, auditor, job_id, TRAINING_KINDS))


@router.get("/jobs/{job_id}/events")
def list_training_job_events(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    after: AfterEvent = None,
    limit: EventLimit = 100,
    order: EventOrder = "asc",
) -> PageOut[TrainingEventOut]:
    """Oldest first by default: pass the last id you saw as `after` to follow a job."""
    return events_page(
        services, principal, job_id, TRAINING_KINDS, after=after, limit=limit, order=order
    )


@router.get(
    "/jobs/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_training_job_events(
    job_id: str,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    after: AfterEvent = None,
) -> StreamingResponse:
    """The job's events as server-sent events while it runs (each with its id, so a client
    that reconnects with `Last-Event-ID` misses none), `event: job` when the job changes and
    `event: end` once it has finished. See `api/job_event_stream.py`."""
    return await job_event_stream(
        services,
        principal,
        job_id,
        TRAINING_KINDS,
        training_job_out,
        after=after,
        last_event_id=request.headers.get("last-event-id"),
    )


@router.get("/jobs/{job_id}/checkpoints")
def list_training_job_checkpoints(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 10,
) -> PageOut[TrainingCheckpointOut]:
    """Newest first."""
    page = services.jobs.checkpoints(
        job_id, caller=principal, kind=TRAINING_KINDS, after=after, limit=limit
    )
    return PageOut(data=[training_checkpoint_out(c) for c in page.items], has_more=page.has_more)


@router.get("/jobs/{job_id}/trials")
def list_training_job_trials(
    job_id: str, services: ServicesDep, principal: PrincipalDep
) -> PageOut[TrialOut]:
    """A search job's trials by number: hyperparameters, metric, state, duration (a
    training job has none)."""
    events = []
    after: int | None = None
    while True:
        page = services.jobs.events(
            job_id,
            caller=principal,
            kind=TRAINING_KINDS,
            after=after,
            limit=MAX_EVENTS_PAGE,
            order="asc",
            type=TRIAL_EVENT,
        )
        events.extend(page.items)
        if not page.has_more or not page.items:
            break
        after = page.items[-1].id
    return PageOut(data=trials_out(events))
