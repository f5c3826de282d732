"""The training-job steps both job APIs share: `/v1/training/jobs` (ours, `api/admin`) and
`/v1/fine_tuning/jobs` (OpenAI's dialect, `api/openai`) create and cancel the same jobs, with
the same quota, validation and audit events; only the request and response shapes differ.

Example (in an async route, once the body is mapped onto a `JobRequest`)::

    job = await create_job(services, principal, auditor, request)
    return training_job_out(job)
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Annotated, Any, Literal

from fastapi import Query
from starlette.concurrency import run_in_threadpool

from openmaas.api.auditor import Auditor
from openmaas.api.convert.training import training_event_out
from openmaas.auth.entities import Principal
from openmaas.jobs.entities import FINISHED, TRAINING, Job
from openmaas.jobs.service import JobService, KindFilter
from openmaas.jobs.worker import CANCEL_GRACE_S, STOP_CHECK_S
from openmaas.protocol.common import MAX_ROW_ID
from openmaas.protocol.training import PageOut, TrainingEventOut
from openmaas.training.kind import TrainingJobKind
from openmaas.training.requests import JobRequest
from openmaas.wiring import Services


def training_kind(jobs: JobService) -> TrainingJobKind:
    """The server's training kind (its recipes, for the routes that list or map them)."""
    kind = jobs.kind(TRAINING)
    assert isinstance(kind, TrainingJobKind), kind
    return kind


async def create_job(
    services: Services,
    principal: Principal,
    auditor: Auditor,
    request: JobRequest | Any,
    *,
    kind: str = TRAINING,
) -> Job:
    """Validate (400 naming the problem), charge the daily quota, record, audit. Jobs of
    other kinds that train or build models (`optimization`) share the quota and audit."""
    jobs = services.jobs
    prepared = await run_in_threadpool(
        functools.partial(jobs.prepare, kind, request, caller=principal)
    )
    await services.limits.charge_training_job(principal)  # 429 when the quota is used up
    try:
        return await run_in_threadpool(functools.partial(jobs.submit, prepared, caller=principal))
    finally:
        # Recorded whether its files passed or failed the job: the job exists either way.
        await run_in_threadpool(_audit_created, services, principal, auditor, prepared.id, kind)


def _audit_created(
    services: Services, principal: Principal, auditor: Auditor, job_id: str, kind: str
) -> None:
    job = services.jobs.get(job_id, caller=principal, kind=kind)
    auditor.record("job.create", f"jobs/{job.id}", after=_audit_state(job))


def cancel_job(
    services: Services,
    principal: Principal,
    auditor: Auditor,
    job_id: str,
    kind: KindFilter = TRAINING,
) -> Job:
    before = services.jobs.get(job_id, caller=principal, kind=kind)
    job = services.jobs.cancel(job_id, caller=principal, kind=kind)
    if (before.status, before.cancel_requested) != (job.status, job.cancel_requested):
        auditor.record(
            "job.cancel", f"jobs/{job.id}", before=_audit_state(before), after=_audit_state(job)
        )
    return job


async def cancel_and_wait(
    services: Services, principal: Principal, auditor: Auditor, job_id: str
) -> Job:
    """Cancel, then answer once the worker has let go of a running job (`cancelled`), as
    OpenAI's cancel answers. A live worker lets go within CANCEL_GRACE_S of seeing the flag
    (it ends its own process past that); only a frozen or dead worker's job is still answered
    `running` after the wait, and is cancelled when its heartbeat times out."""
    job = await run_in_threadpool(cancel_job, services, principal, auditor, job_id)
    deadline = time.monotonic() + services.settings.job_heartbeat_s + CANCEL_GRACE_S + 5.0
    while job.status not in FINISHED and time.monotonic() < deadline:
        # The worker is another process, maybe on another machine: the shared database,
        # which pushes nothing, is the only place its letting go shows.
        await asyncio.sleep(STOP_CHECK_S / 2)
        job = await run_in_threadpool(
            functools.partial(services.jobs.get, job_id, caller=principal, kind=TRAINING)
        )
    return job


def _audit_state(job: Job) -> dict[str, Any]:
    return {
        "kind": job.kind,
        "status": job.status.value,
        "cancel_requested": job.cancel_requested,
        "recipe": job.recipe,
        "training_file": job.training_file,
        "model_name": job.model_name,
    }


# The query of every job kind's events route (training, optimization, evaluation jobs).
MAX_EVENTS_PAGE = 1000
AfterEvent = Annotated[int | None, Query(ge=0, le=MAX_ROW_ID, description="Last event id seen.")]
EventLimit = Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)]
EventOrder = Annotated[Literal["asc", "desc"], Query()]


def events_page(
    services: Services,
    principal: Principal,
    job_id: str,
    kind: KindFilter,
    *,
    after: int | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> PageOut[TrainingEventOut]:
    """One page of a job's events, as its kind's events route answers it."""
    page = services.jobs.events(
        job_id, caller=principal, kind=kind, after=after, limit=limit, order=order
    )
    return PageOut(data=[training_event_out(event) for event in page.items], has_more=page.has_more)
