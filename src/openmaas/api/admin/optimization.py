"""`/v1/optimization/jobs`: a registered model exported to ONNX or quantized, registered as
a new version with lineage and measured deltas (`optimize/`). Create and cancel share the
training jobs' steps (`api/training_jobs.py`): the daily `training_jobs_per_day` quota,
validation and audit events (`jobs/<id>`). Another project's job answers 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from openmaas.api.auditor import AuditorDep
from openmaas.api.convert.optimization import optimization_job_out
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
from openmaas.optimize.kind import OPTIMIZATION
from openmaas.optimize.registry import METHODS
from openmaas.optimize.requests import OptimizationRequest
from openmaas.protocol.common import ListOut
from openmaas.protocol.optimization import (
    OptimizationJobCreate,
    OptimizationJobOut,
    OptimizationMethodOut,
)
from openmaas.protocol.training import PageOut, TrainingEventOut

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/optimization", tags=["optimization"])

MAX_PAGE = 100


@router.get("/methods")
def list_optimization_methods(principal: PrincipalDep) -> ListOut[OptimizationMethodOut]:
    """The methods a job can run, their settings' defaults and what they apply to."""
    methods = [
        OptimizationMethodOut(
            name=method.name,
            summary=method.summary,
            settings=dict(method.defaults),
            runtimes=sorted(method.runtimes),
            tasks=sorted(method.tasks),
            needs_training_file=method.learns_from_file(method.defaults),  # by default
        )
        for method in sorted(METHODS.values(), key=lambda method: method.name)
    ]
    return ListOut(data=methods)


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
async def create_optimization_job(
    body: OptimizationJobCreate,
    services: ServicesDep,
    principal: PrincipalDep,
    auditor: AuditorDep,
) -> OptimizationJobOut:
    request = OptimizationRequest(
        model=body.model,
        method=body.method,
        settings=body.settings,
        model_name=body.model_name,
        alias=body.alias,
        eval_file=body.eval_file,
        training_file=body.training_file,
    )
    job = await create_job(services, principal, auditor, request, kind=OPTIMIZATION)
    return optimization_job_out(job)


@router.get("/jobs")
def list_optimization_jobs(
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=64, description="Last id of a page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> PageOut[OptimizationJobOut]:
    """Newest first."""
    page = services.jobs.list(caller=principal, kind=OPTIMIZATION, after=after, limit=limit)
    return PageOut(data=[optimization_job_out(job) for job in page.items], has_more=page.has_more)


@router.get("/jobs/{job_id}")
def get_optimization_job(
    job_id: str, services: ServicesDep, principal: PrincipalDep
) -> OptimizationJobOut:
    return optimization_job_out(services.jobs.get(job_id, caller=principal, kind=OPTIMIZATION))


@router.post("/jobs/{job_id}/cancel")
def cancel_optimization_job(
    job_id: str, services: ServicesDep, principal: PrincipalDep, auditor: AuditorDep
) -> OptimizationJobOut:
    """A job not started yet is cancelled at once; a running one stops at its next step."""
    return optimization_job_out(cancel_job(services, principal, auditor, job_id, OPTIMIZATION))


@router.get("/jobs/{job_id}/events")
def list_optimization_job_events(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    after: AfterEvent = None,
    limit: EventLimit = 100,
    order: EventOrder = "asc",
) -> PageOut[TrainingEventOut]:
    """Oldest first by default: pass the last id you saw as `after` to follow a job."""
    return events_page(
        services, principal, job_id, OPTIMIZATION, after=after, limit=limit, order=order
    )
