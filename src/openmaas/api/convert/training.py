"""Training jobs, their events, checkpoints and progress, and recipes as wire models: OpenAI's
fine-tuning shapes and our richer training ones."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from openmaas.jobs.entities import Job, JobCheckpoint, JobEvent, JobProgress
from openmaas.protocol.training import (
    FineTuningCheckpointOut,
    FineTuningErrorOut,
    FineTuningEventOut,
    FineTuningHyperparametersOut,
    FineTuningJobOut,
    ProgressOut,
    RecipeOut,
    TrainingCheckpointOut,
    TrainingEventOut,
    TrainingJobOut,
    TrialOut,
    event_cursor,
)
from openmaas.registry.entities import ModelVersion
from openmaas.training.hyperparameters import BATCH_NAMES, EPOCH_NAMES
from openmaas.training.recipe import Recipe

# -- OpenAI: /v1/fine_tuning/jobs ------------------------------------------------------------


def fine_tuning_job_out(job: Job) -> FineTuningJobOut:
    hyperparameters = openai_hyperparameters(job)
    metadata = job.options.get("metadata")
    return FineTuningJobOut(
        id=job.id,
        model=job.openai_model,
        created_at=_unix(job.created_at) or 0,
        finished_at=_unix(job.finished_at),
        fine_tuned_model=job.fine_tuned_model,
        organization_id=job.project,
        status=job.status.value,
        validation_file=job.validation_file,
        training_file=job.training_file,
        hyperparameters=hyperparameters,
        trained_tokens=job.trained_tokens,
        error=FineTuningErrorOut.model_validate(dict(job.error)) if job.error else None,
        seed=job.seed,
        estimated_finish=_unix(job.progress.estimated_finish) if job.progress else None,
        integrations=[],
        metadata=dict(metadata) if isinstance(metadata, Mapping) else None,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": hyperparameters.model_dump()},
        },
    )


def fine_tuning_event_out(event: JobEvent) -> FineTuningEventOut:
    return FineTuningEventOut(
        id=event_cursor(event.id),
        created_at=_unix(event.created_at) or 0,
        level=event.level,
        message=event.message,
        type=event.type,
        data=dict(event.data) if event.data is not None else None,
    )


def fine_tuning_checkpoint_out(
    job: Job, published: ModelVersion, last: JobCheckpoint | None
) -> FineTuningCheckpointOut:
    """The model a job published, as OpenAI's checkpoint: `fine_tuned_model_checkpoint` is
    its `name:version`, which every route takes; step and training metrics are those of the
    job's last checkpoint, with the model's own (held-out split) metrics."""
    step = last.step if last else (job.progress.step if job.progress else 0)
    metrics = {**(last.metrics if last else {}), **published.metrics, "step": float(step)}
    if "loss" in metrics:  # what OpenAI's clients show
        metrics.setdefault("train_loss", metrics["loss"])
    return FineTuningCheckpointOut(
        id=last.id if last else f"ftckpt-{job.id.removeprefix('ftjob-')}",
        created_at=_unix(published.created_at) or 0,
        fine_tuned_model_checkpoint=f"{published.model}:{published.version}",
        fine_tuning_job_id=job.id,
        metrics=metrics,
        step_number=step,
    )


def openai_hyperparameters(job: Job) -> FineTuningHyperparametersOut:
    values = job.hyperparameters
    epochs = next((values[n] for n in EPOCH_NAMES if isinstance(values.get(n), int)), "auto")
    batch = next((values[n] for n in BATCH_NAMES if isinstance(values.get(n), int)), "auto")
    multiplier = job.options.get("learning_rate_multiplier")
    return FineTuningHyperparametersOut(
        n_epochs=epochs,
        batch_size=batch,
        learning_rate_multiplier=float(multiplier)
        if isinstance(multiplier, int | float)
        else "auto",
    )


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


# -- ours: /v1/training/jobs -----------------------------------------------------------------


def recipe_out(recipe: Recipe) -> RecipeOut:
    return RecipeOut(
        name=recipe.name,
        tasks=list(recipe.tasks),
        needs_base_model=recipe.needs_base_model,
        accepts_base_model=recipe.accepts_base_model,
        description=recipe.description,
        defaults=recipe.defaults(),
        search_space={name: dict(value) for name, value in recipe.search_space.items()},
    )


def progress_out(progress: JobProgress) -> ProgressOut:
    return ProgressOut(
        step=progress.step,
        epoch=progress.epoch,
        total_steps=progress.total_steps,
        metrics=dict(progress.metrics),
        estimated_finish=progress.estimated_finish,
    )


def training_job_out(job: Job) -> TrainingJobOut:
    base_version = job.options.get("base_version")
    search = job.options.get("search")
    folds = job.options.get("cross_validation")
    resources = job.options.get("resources")
    return TrainingJobOut(
        id=job.id,
        project=job.project,
        created_by=job.created_by,
        status=job.status.value,
        recipe=job.recipe,
        task=job.task,
        base_model=job.base_model,
        base_version=str(base_version) if base_version else None,
        training_file=job.training_file,
        validation_file=job.validation_file,
        hyperparameters=dict(job.hyperparameters),
        seed=job.seed,
        suffix=job.suffix,
        model_name=job.model_name,
        alias=job.alias,
        fine_tuned_model=job.fine_tuned_model,
        metrics=dict(job.metrics),
        trained_tokens=job.trained_tokens,
        error=dict(job.error) if job.error else None,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
        worker_id=job.worker_id,
        heartbeat_at=job.heartbeat_at,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        progress=progress_out(job.progress) if job.progress else None,
        kind=job.kind,
        search=dict(search) if isinstance(search, Mapping) else None,
        cross_validation=folds if isinstance(folds, int) else None,
        cross_validation_final=(
            str(job.options.get("cross_validation_final")) if isinstance(folds, int) else None
        ),
        resources=dict(resources) if isinstance(resources, Mapping) else None,
    )


def training_event_out(event: JobEvent) -> TrainingEventOut:
    return TrainingEventOut(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        type=event.type,
        message=event.message,
        data=dict(event.data) if event.data is not None else None,
    )


def trials_out(events: Iterable[JobEvent]) -> list[TrialOut]:
    """A search job's trials from its `trial` events, oldest first: each trial's latest."""
    latest: dict[int, Mapping[str, object]] = {}
    for event in events:
        record = (event.data or {}).get("trial")
        if isinstance(record, Mapping) and isinstance(record.get("number"), int):
            latest[int(record["number"])] = record
    return [TrialOut.model_validate(dict(latest[n])) for n in sorted(latest)]


def training_checkpoint_out(checkpoint: JobCheckpoint) -> TrainingCheckpointOut:
    return TrainingCheckpointOut(
        id=checkpoint.id,
        job_id=checkpoint.job_id,
        step=checkpoint.step,
        epoch=checkpoint.epoch,
        metrics=dict(checkpoint.metrics),
        created_at=checkpoint.created_at,
    )
