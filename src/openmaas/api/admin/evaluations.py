"""`/v1/evaluations`: a registered version scored on a labelled file (`evaluation/`), with
an optional second version scored on the same file (`compare_to`). Create and cancel share
the training jobs' steps (`api/training_jobs.py`): the daily `training_jobs_per_day` quota,
validation and audit events (`jobs/<id>`). Another project's evaluation answers 404.

A listing carries each evaluation's metrics; one evaluation (`GET /v1/evaluations/{id}`)
adds its full report, the compared version's and the deltas. `?model=name:3` lists the
evaluations of one version (`name` or `name@alias` name the version they resolve to now).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.evaluation import evaluation_out
from openmaas.api.deps import PrincipalDep, ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.training_jobs import (
    AfterEvent,
    EventLimit,
    EventOrder,
    cancel_job,
    create_job,
    events_page,
)
from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest, NotFound
from openmaas.evaluation.kind import EVALUATION, EvaluationRequest
from openmaas.evaluation.results import load_result
from openmaas.jobs.entities import JobStatus
from openmaas.protocol.evaluation import EvaluationCreate, EvaluationOut
from openmaas.protocol.training import PageOut, TrainingEventOut
from openmaas.registry.names import parse_reference
from openmaas.wiring import Services

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/evaluations", tags=["evaluation"])

MAX_PAGE = 100


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_evaluation(
    body: EvaluationCreate,
    services: ServicesDep,
    principal: PrincipalDep,
    auditor: AuditorDep,
) -> EvaluationOut:
    request = EvaluationRequest(model=body.model, file=body.file, compare_to=body.compare_to)
    job = await create_job(services, principal, auditor, request, kind=EVALUATION)
    return evaluation_out(job)


@router.get("")
def list_evaluations(
    services: ServicesDep,
    principal: PrincipalDep,
    model: Annotated[
        str | None,
        Query(max_length=256, description="Only evaluations of this version (a reference)."),
    ] = None,
    after: Annotated[str | None, Query(max_length=64, description="Last id of a page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> PageOut[EvaluationOut]:
    """Newest first."""
    version = _exact_version(services, model, principal) if model is not None else None
    page = services.jobs.list(
        caller=principal, kind=EVALUATION, base_model=version, after=after, limit=limit
    )
    return PageOut(data=[evaluation_out(job) for job in page.items], has_more=page.has_more)


@router.get("/{evaluation_id}")
def get_evaluation(
    evaluation_id: str, services: ServicesDep, principal: PrincipalDep
) -> EvaluationOut:
    job = services.jobs.get(evaluation_id, caller=principal, kind=EVALUATION)
    result = (
        load_result(services.registry.artifacts, job.id)
        if job.status is JobStatus.SUCCEEDED
        else None
    )
    return evaluation_out(job, result)


@router.post("/{evaluation_id}/cancel")
def cancel_evaluation(
    evaluation_id: str, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> EvaluationOut:
    """An evaluation not started yet is cancelled at once; a running one stops at its next
    batch of examples."""
    return evaluation_out(cancel_job(services, principal, auditor, evaluation_id, EVALUATION))


@router.get("/{evaluation_id}/events")
def list_evaluation_events(
    evaluation_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    after: AfterEvent = None,
    limit: EventLimit = 100,
    order: EventOrder = "asc",
) -> PageOut[TrainingEventOut]:
    """Oldest first by default: pass the last id you saw as `after` to follow one."""
    return events_page(
        services, principal, evaluation_id, EVALUATION, after=after, limit=limit, order=order
    )


def _exact_version(services: Services, reference: str, caller: Principal) -> str:
    """`name:version` as evaluations record it: taken as written when it says a version
    (its evaluations stay listed after the version is deleted), else resolved now."""
    parsed = parse_reference(reference)
    if parsed.version is not None and parsed.project is None:
        return f"{parsed.model}:{parsed.version}"
    try:
        version = services.registry.resolve(reference, caller=caller)
    except NotFound as exc:
        raise InvalidRequest(
            f"model {reference!r}: {exc.message}", param="model", code="model_not_found"
        ) from None
    return f"{version.model}:{version.version}"
