"""`/v1/training/jobs`: training jobs with everything a recipe takes (our richer API), and
the create and cancel steps `/v1/fine_tuning/jobs` shares.

Jobs belong to the caller's project: another project's job answers 404 as if it did not
exist (admins see every job). Creating one counts against the project's
`training_jobs_per_day`; creating and cancelling are audited (`jobs/<id>`).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from starlette.concurrency import run_in_threadpool

from openmaas.api.convert.training import (
    recipe_out,
    training_checkpoint_out,
    training_event_out,
    training_job_out,
)
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.openai_fine_tuning import training_kind
from openmaas.api.routes.audit import Auditor, AuditorDep
from openmaas.auth.entities import Principal
from openmaas.jobs.entities import TRAINING, Job
from openmaas.protocol.training import (
    PageOut,
    RecipeOut,
    TrainingCheckpointOut,
    TrainingEventOut,
    TrainingJobCreate,
    TrainingJobOut,
)
from openmaas.training.requests import EarlyStopping, JobRequest
from openmaas.wiring import Services

router = APIRouter(prefix="/v1/training", tags=["training"])

MAX_PAGE = 100
MAX_EVENTS_PAGE = 1000


async def create_job(
    services: Services, principal: Principal, auditor: Auditor, request: JobRequest
) -> Job:
    """Validate (400 naming the problem), charge the daily quota, record, audit."""
    jobs = services.jobs
    prepared = await run_in_threadpool(
        functools.partial(jobs.prepare, TRAINING, request, caller=principal)
    )
    await services.limits.charge_training_job(principal)  # 429 when the quota is used up
    try:
        return await run_in_threadpool(functools.partial(jobs.submit, prepared, caller=principal))
    finally:
        # Recorded whether its files passed or failed the job: the job exists either way.
        await run_in_threadpool(_audit_created, services, principal, auditor, prepared.id)


def _audit_created(services: Services, principal: Principal, auditor: Auditor, job_id: str) -> None:
    job = services.jobs.get(job_id, caller=principal)
    auditor.record("job.create", f"jobs/{job.id}", after=_audit_state(job))


def cancel_job(services: Services, principal: Principal, auditor: Auditor, job_id: str) -> Job:
    before = services.jobs.get(job_id, caller=principal)
    job = services.jobs.cancel(job_id, caller=principal)
    if (before.status, before.cancel_requested) != (job.status, job.cancel_requested):
        auditor.record(
            "job.cancel", f"jobs/{job.id}", before=_audit_state(before), after=_audit_state(job)
        )
    return job


def _audit_state(job: Job) -> dict[str, Any]:
    return {
        "status": job.status.value,
        "cancel_requested": job.cancel_requested,
        "recipe": job.recipe,
        "training_file": job.training_file,
        "model_name": job.model_name,
    }


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
    )
    job = await create_job(services, principal, auditor, request)
    return training_job_out(job)


@router.get("/jobs")
def list_training_jobs(
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=64, description="Last id of a page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> PageOut[TrainingJobOut]:
    """Newest first."""
    page = services.jobs.list(caller=principal, after=after, limit=limit)
    return PageOut(data=[training_job_out(job) for job in page.items], has_more=page.has_more)


@router.get("/jobs/{job_id}")
def get_training_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> TrainingJobOut:
    return training_job_out(services.jobs.get(job_id, caller=principal))


@router.post("/jobs/{job_id}/cancel")
def cancel_training_job(
    job_id: str, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> TrainingJobOut:
    """A job not started yet is cancelled at once; a running one stops within seconds and
    keeps its last checkpoint."""
    return training_job_out(cancel_job(services, principal, auditor, job_id))


@router.get("/jobs/{job_id}/events")
def list_training_job_events(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[int | None, Query(ge=0, description="Last event id seen.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
) -> PageOut[TrainingEventOut]:
    """Oldest first by default: pass the last id you saw as `after` to follow a job."""
    page = services.jobs.events(job_id, caller=principal, after=after, limit=limit, order=order)
    return PageOut(
        data=[training_event_out(event) for event in page.items],
        has_more=page.has_more,
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
    page = services.jobs.checkpoints(job_id, caller=principal, after=after, limit=limit)
    return PageOut(data=[training_checkpoint_out(c) for c in page.items], has_more=page.has_more)
