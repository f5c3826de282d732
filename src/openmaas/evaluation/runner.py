"""An evaluation job's run on a worker: read the file's examples once, score the version
(and the one to compare with) on them, store the result, report the first version's
metrics on the job.

Progress is reported as steps of examples scored (both versions' together, so a comparison
counts twice the file); the run stops between batches when the job is cancelled.

Example::

    result = run_evaluation(kind, context)  # what EvaluationJobKind.run does
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from openmaas.errors import InvalidRequest, VersionNotFound
from openmaas.evaluation.registered import evaluate_pinned, load_examples
from openmaas.evaluation.report import EvaluationReport, deltas
from openmaas.evaluation.results import EvaluationResult, save_result
from openmaas.evaluation.scoring import OnBatch
from openmaas.jobs.context import JobContext, JobStopped, job_caller
from openmaas.jobs.publish import JobResult
from openmaas.registry.entities import VersionPin

if TYPE_CHECKING:
    from openmaas.evaluation.kind import EvaluationJobKind

PROGRESS_EVERY_S = 1.0  # progress events at most this often (a file may take many batches)
SHOWN_METRICS = ("accuracy", "macro_f1", "ece", "entity_f1")


def run_evaluation(kind: EvaluationJobKind, context: JobContext) -> JobResult:
    job = context.job
    caller = job_caller(job)
    scored = [("model", str(job.options["model_version"]), "model_pin")]
    if job.options.get("compare_to_pin"):
        scored.append(("compare_to", str(job.options["compare_to_version"]), "compare_to_pin"))
    examples = load_examples(
        kind.datasets,
        job.training_file,
        job.task,
        caller=caller,
        max_examples=kind.max_examples,
        model=str(job.base_model),
    )
    context.plan_steps(len(examples) * len(scored))
    reports: list[EvaluationReport] = []
    for position, (param, reference, pin_option) in enumerate(scored):
        context.message(f"Scoring {reference} on {len(examples)} examples")
        pin = VersionPin.from_dict(dict(job.options[pin_option]))
        try:
            report = evaluate_pinned(
                kind.registry,
                kind.datasets,
                pin,
                job.training_file,
                caller=caller,
                examples=examples,
                threads=context.threads,
                on_batch=_progress(context, position * len(examples)),
            )
        except VersionNotFound:
            raise InvalidRequest(
                f"the model {reference} this job was created with is gone or no longer "
                f"visible to project {job.project!r}; create a new evaluation",
                param=param,
                code="model_gone",
            ) from None
        context.message(f"{reference}: {_summary(report)}")
        reports.append(report)
    first = reports[0]
    compared = reports[1] if len(reports) > 1 else None
    result = EvaluationResult(
        report=first,
        compared=compared,
        deltas=deltas(first, compared) if compared is not None else {},
    )
    save_result(kind.registry.artifacts, job.id, result)
    message = f"evaluated {first.model} on {first.n_examples} examples: {_summary(first)}"
    if compared is not None:
        message += f"; {compared.model}: {_summary(compared)}"
    return JobResult(message=message, metrics=first.metrics)


def _progress(context: JobContext, offset: int) -> OnBatch:
    started = time.monotonic()
    last = [0.0]

    def on_batch(done: int) -> None:
        if context.should_stop():
            raise JobStopped(f"stopped after {offset + done} examples")
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            rate = done / max(now - started, 1e-6)
            context.report_metrics(offset + done, 1, {"examples_per_s": rate})

    return on_batch


def _summary(report: EvaluationReport) -> str:
    shown = [name for name in SHOWN_METRICS if name in report.metrics]
    return ", ".join(f"{name}={report.metrics[name]:.4g}" for name in shown)
