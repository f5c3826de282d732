"""Evaluation as a job kind: a registered version scored on a labelled file, the report
stored with the job (and, with `compare_to`, a second version scored on the same file, with
the deltas between the two).

`prepare` resolves and pins the version(s) as the caller sees them and checks the file's
record (visible, validated, of the model's task, at most `max_examples`: 400 naming
`model`, `compare_to` or `file`); `check_inputs` reads the examples once the job is
recorded; `run` (`evaluation.runner`) loads each version on a worker and scores it.

The job records the exact version it scores as its `base_model` (`name:version`), so the
evaluations of one version can be listed (`JobService.list(base_model=...)`).

Example::

    kind = EvaluationJobKind(registry=registry, datasets=datasets, max_examples=10_000)
    jobs = JobService(db, kinds=[training, kind])
    job = jobs.create("evaluation", EvaluationRequest("sentiment:3", "file-1a2b"), caller=caller)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from openmaas.auth.access import is_admin
from openmaas.auth.entities import Principal
from openmaas.datasets.service import DatasetService
from openmaas.errors import InvalidRequest
from openmaas.evaluation.registered import (
    DEFAULT_MAX_EXAMPLES,
    check_file,
    load_examples,
    pin_version,
    resolve_version,
)
from openmaas.jobs.context import CREATED_BY_ADMIN, job_caller
from openmaas.jobs.entities import Job, NewJob
from openmaas.jobs.kinds import Admission
from openmaas.registry.composition import Registry

if TYPE_CHECKING:
    from openmaas.jobs.context import JobContext
    from openmaas.jobs.publish import JobResult

EVALUATION = "evaluation"


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    model: str  # a reference: `name`, `name:3`, `name@production`
    file: str  # a dataset's file id
    compare_to: str | None = None  # a second reference, scored on the same file


def new_job_id() -> str:
    return f"evaljob-{secrets.token_hex(12)}"


class EvaluationJobKind:
    """The `evaluation` job kind (see the module's docstring)."""

    name = EVALUATION
    failure_code = "evaluation_failed"

    def __init__(
        self,
        *,
        registry: Registry,
        datasets: DatasetService,
        max_examples: int = DEFAULT_MAX_EXAMPLES,
    ) -> None:
        self.registry = registry
        self.datasets = datasets
        self.max_examples = max_examples

    def prepare(self, request: EvaluationRequest, *, caller: Principal) -> NewJob:
        version = resolve_version(self.registry, request.model, caller=caller)
        reference = f"{version.model}:{version.version}"
        check_file(
            self.datasets,
            request.file,
            version.task,
            caller=caller,
            max_examples=self.max_examples,
            model=reference,
        )
        pin = pin_version(self.registry, version)
        options: dict[str, object] = {
            "model": request.model,
            "model_version": reference,
            "model_pin": pin.to_dict(),
            CREATED_BY_ADMIN: is_admin(caller),
        }
        if request.compare_to is not None:
            other = resolve_version(
                self.registry, request.compare_to, caller=caller, param="compare_to"
            )
            if other.task != version.task:
                raise InvalidRequest(
                    f"compare_to {request.compare_to!r} is a {other.task} model; "
                    f"{reference} is a {version.task} model: compare models of one task",
                    param="compare_to",
                    code="task_mismatch",
                )
            options |= {
                "compare_to": request.compare_to,
                "compare_to_version": f"{other.model}:{other.version}",
                "compare_to_pin": pin_version(self.registry, other).to_dict(),
            }
        return NewJob(
            id=new_job_id(),
            kind=EVALUATION,
            project=caller.project,
            key_id=caller.key_id or None,
            created_by=caller.actor,
            recipe=EVALUATION,
            task=version.task,
            base_model=reference,
            training_file=request.file,
            validation_file=None,
            hyperparameters={},
            options=options,
            suffix=None,
            seed=0,
            model_name="",
            alias=None,
        )

    def checking_message(self, job: NewJob) -> str:
        return f"Checking the examples of file {job.training_file}"

    def check_inputs(self, job: Job) -> Admission:
        examples = load_examples(
            self.datasets,
            job.training_file,
            job.task,
            caller=job_caller(job),
            max_examples=self.max_examples,
            model=str(job.base_model),
        )
        versions = [str(job.base_model)]
        if job.options.get("compare_to_version"):
            versions.append(str(job.options["compare_to_version"]))
        return Admission(
            message=f"Job queued: {' and '.join(versions)} on {len(examples)} examples of "
            f"file {job.training_file}",
            data={"examples": len(examples), "versions": versions},
        )

    def run(self, context: JobContext) -> JobResult:
        from openmaas.evaluation.runner import run_evaluation

        return run_evaluation(self, context)
