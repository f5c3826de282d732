"""A training job's run on a worker: its recipe trains on the job's split, resuming from the
newest checkpoint, and the trained model is what the job publishes.

The recipe works in local directories under the job's scratch space (`work/` kept across
resumes of the job, `output/` emptied on each run); its checkpoints go to the artifact store
through the job context, and its output is registered by `jobs.publish`.

Example::

    output = run_training(kind, context)  # what TrainingJobKind.run does
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.errors import InvalidRequest, NotFound, OpenMaaSError
from openmaas.jobs.context import JobContext, JobStopped, finite, job_caller
from openmaas.jobs.entities import Job
from openmaas.jobs.publish import JobOutput
from openmaas.observability.tracing import child_span
from openmaas.registry.entities import VersionPin
from openmaas.registry.files import OpenedVersion
from openmaas.training.hyperparameters import BATCH_NAMES, EPOCH_NAMES
from openmaas.training.recipe import (
    Checkpoint,
    Example,
    TrainingContext,
    TrainingResult,
    TrainingStopped,
)
from openmaas.training.requests import split_examples

if TYPE_CHECKING:
    from openmaas.training.kind import TrainingJobKind


def run_training(kind: TrainingJobKind, context: JobContext) -> JobOutput:
    """Train the job with its recipe; `JobStopped` when the recipe stopped as asked."""
    job = context.job
    if job.options.get("cross_validation"):
        from openmaas.training.cross_validation import run_cross_validation

        output: JobOutput = run_cross_validation(kind, context)
        return output
    output_dir, work_dir = context.scratch / "output", context.scratch / "work"
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    with child_span("openmaas.job.load_data") as span:
        train, validation, test = split_examples(kind.datasets, job)
        restored = context.restore_checkpoint(work_dir / "resume")
        span.set_attribute("openmaas.examples.train", len(train))
    resume = (
        Checkpoint(
            directory=restored.directory,
            step=restored.checkpoint.step,
            epoch=restored.checkpoint.epoch,
            metrics=restored.checkpoint.metrics,
        )
        if restored is not None
        else None
    )
    context.plan_steps(estimate_total_steps(job.hyperparameters, len(train)))
    try:
        result = train_once(
            kind,
            context,
            TrainingRun(
                train=train,
                validation=validation,
                test=test,
                hyperparameters=job.hyperparameters,
                output_dir=output_dir,
                work_dir=work_dir,
                resume_from=resume,
                on_message=lambda level, text: context.message(text, level),
                on_metrics=context.report_metrics,
                on_checkpoint=lambda directory, step, epoch, metrics: _checkpoint(
                    context, directory, step, epoch, metrics
                ),
                should_stop=context.should_stop,
                on_plan=context.plan_steps,
            ),
        )
    except TrainingStopped as exc:
        raise JobStopped(str(exc)) from exc
    return job_output(job, result, output_dir)


@dataclass(slots=True)
class TrainingRun:
    """One training of a job's recipe: its data, hyperparameters, directories and hooks (a
    search trains many, a cross-validation one per fold)."""

    train: Sequence[Example]
    validation: Sequence[Example]
    test: Sequence[Example]
    hyperparameters: Mapping[str, Any]
    output_dir: Path
    work_dir: Path
    resume_from: Checkpoint | None = None
    on_message: Callable[[str, str], None] = lambda level, text: None
    on_metrics: Callable[[int, int, Mapping[str, float]], None] = lambda step, epoch, m: None
    on_checkpoint: Callable[[Path, int, int, Mapping[str, float]], None] = (
        lambda directory, step, epoch, metrics: None
    )
    should_stop: Callable[[], bool] = lambda: False
    on_plan: Callable[[int], None] = lambda total_steps: None


def train_once(kind: TrainingJobKind, context: JobContext, run: TrainingRun) -> TrainingResult:
    """Train the job's recipe once as `run` says; `TrainingStopped` when it stopped."""
    job = context.job
    recipe = kind.recipes.get(job.recipe)
    if recipe is None:
        raise OpenMaaSError(
            f"recipe {job.recipe!r} is not installed on worker {context.worker_id} "
            f"(it has: {', '.join(sorted(kind.recipes))})"
        )
    base = _open_base(kind, job) if job.options.get("base_version") else None
    vectors_pin = job.options.get("embeddings_version_pin")
    vectors = None
    try:
        if isinstance(vectors_pin, dict):
            vectors = _open_embeddings(kind, job, VersionPin.from_dict(vectors_pin))
        ctx = TrainingContext(
            job_id=job.id,
            task=job.task,
            train=run.train,
            validation=run.validation,
            test=run.test,
            hyperparameters=dict(run.hyperparameters),
            seed=job.seed,
            output_dir=run.output_dir,
            work_dir=run.work_dir,
            device=context.device,
            base_model=base.directory if base is not None else None,
            base_model_params=dict(base.version.params) if base is not None else {},
            base_model_reference=(
                f"{base.version.model}:{base.version.version}" if base is not None else None
            ),
            base_model_task=base.version.task if base is not None else None,
            base_model_runtime=base.version.runtime if base is not None else None,
            resume_from=run.resume_from,
            embeddings=vectors.directory if vectors is not None else None,
            embeddings_reference=(
                f"{vectors.version.model}:{vectors.version.version}" if vectors else None
            ),
            on_message=run.on_message,
            on_metrics=run.on_metrics,
            on_checkpoint=run.on_checkpoint,
            should_stop=run.should_stop,
            on_plan=run.on_plan,
        )
        with child_span("openmaas.job.train_epochs", {"openmaas.recipe": job.recipe}):
            return recipe.train(ctx)
    finally:
        for opened in (base, vectors):
            if opened is not None:
                opened.close()


def job_output(
    job: Job,
    result: TrainingResult,
    output_dir: Path,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> JobOutput:
    """What the job publishes: the model in `output_dir`, trained with `hyperparameters`
    (the job's by default); `extra` joins the version's `training` metadata, `metrics`
    the registered metrics."""
    base_version = job.options.get("base_version")
    vectors_pin = job.options.get("embeddings_version_pin")
    base_reference = str(base_version) if base_version else None
    return JobOutput(
        directory=output_dir,
        task=result.task,
        runtime=result.runtime,
        description=f"Trained by job {job.id} (recipe {job.recipe})",
        params={
            **dict(result.params),
            "training": {
                "job_id": job.id,
                "recipe": job.recipe,
                "hyperparameters": dict(
                    job.hyperparameters if hyperparameters is None else hyperparameters
                ),
                "seed": job.seed,
                "report": dict(result.report),
                **dict(extra or {}),
            },
        },
        metrics=finite({**result.metrics, **dict(metrics or {})}),
        trained_tokens=result.trained_tokens,
        source={
            "type": "training-job",
            "job_id": job.id,
            "recipe": job.recipe,
            "base_model": base_reference,
            "training_file": job.training_file,
            "validation_file": job.validation_file,
            "embeddings": (
                VersionPin.from_dict(vectors_pin).reference
                if isinstance(vectors_pin, dict)
                else None
            ),
        },
        base_version=base_reference,
        transform="fine-tune" if base_reference else "train",
        dataset_id=job.training_file,
        dataset_sha256=str(job.options.get("dataset_sha256") or "") or None,
    )


def _open_base(kind: TrainingJobKind, job: Job) -> OpenedVersion:
    """The base model pinned when the job was created, opened as the job's project: a
    version deleted since (its name perhaps registered again by another project) or no
    longer visible to the project fails the job, naming it."""
    caller = job_caller(job)
    pinned = job.options.get("base_version_pin")
    try:
        if isinstance(pinned, dict):
            return kind.registry.open_pinned(VersionPin.from_dict(pinned), caller=caller)
        # A job created before pins: its `name:version`, still only as its project sees it.
        return kind.registry.open_files(str(job.options["base_version"]), caller=caller)
    except NotFound:
        reference = job.options.get("base_version")
        raise InvalidRequest(
            f"the base model {reference} this job was created with is gone: it was deleted "
            "(or its name registered again) or is no longer visible to project "
            f"{job.project!r}; create a new job",
            param="model",
            code="base_model_gone",
        ) from None


def _open_embeddings(kind: TrainingJobKind, job: Job, pin: VersionPin) -> OpenedVersion:
    """The word vectors pinned when the job was created, opened as the job's project."""
    try:
        return kind.registry.open_pinned(pin, caller=job_caller(job))
    except NotFound:
        raise InvalidRequest(
            f"the embeddings {pin.reference} this job was created with are gone: deleted (or "
            f"the name registered again) or no longer visible to project {job.project!r}; "
            "create a new job",
            param="hyperparameters.embeddings",
            code="embeddings_gone",
        ) from None


def _checkpoint(
    context: JobContext, directory: Path, step: int, epoch: int, metrics: Mapping[str, float]
) -> None:
    context.save_checkpoint(directory, step, epoch, metrics)


def estimate_total_steps(hyperparameters: Mapping[str, Any], n_train: int) -> int | None:
    epochs = next((hyperparameters[n] for n in EPOCH_NAMES if n in hyperparameters), None)
    batch = next((hyperparameters[n] for n in BATCH_NAMES if n in hyperparameters), None)
    if not isinstance(epochs, int) or not isinstance(batch, int) or epochs < 1 or batch < 1:
        return None
    return epochs * math.ceil(n_train / batch)
