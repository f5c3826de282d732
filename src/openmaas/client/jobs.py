"""Training jobs: recipes, create, list, follow, wait, cancel, events, checkpoints.

Example::

    job = client.create_training_job("textcnn", dataset.id, alias="staging")
    for update in client.follow_training_job(job.id):
        for event in update.events:
            print(event.message)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from openmaas.client.resource import Resource, segment, wait_until
from openmaas.protocol.training import (
    EarlyStoppingIn,
    PageOut,
    RecipeOut,
    ResourcesIn,
    SearchIn,
    TrainingCheckpointOut,
    TrainingEventOut,
    TrainingJobCreate,
    TrainingJobOut,
    TrainingJobUpdate,
    TrialOut,
)


class JobsResource(Resource):
    """`/v1/training` (recipes and jobs)."""

    def recipes(self) -> list[RecipeOut]:
        """The recipes the server trains with: tasks, base model needs, defaults."""
        return self._list("GET", "/v1/training/recipes", RecipeOut)

    def create_training_job(
        self,
        recipe: str,
        training_file: str,
        *,
        validation_file: str | None = None,
        task: str | None = None,
        base_model: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        early_stopping: EarlyStoppingIn | Mapping[str, Any] | None = None,
        class_imbalance: str | None = None,
        validation_split: float = 0.1,
        test_split: float = 0.1,
        seed: int | None = None,
        suffix: str | None = None,
        model_name: str | None = None,
        alias: str | None = None,
        cross_validation: int | None = None,
        cross_validation_final: str = "all",
        search: SearchIn | Mapping[str, Any] | None = None,
        resources: ResourcesIn | Mapping[str, Any] | None = None,
    ) -> TrainingJobOut:
        """Queue a training job; on success it registers `model_name` (default
        `<suffix or recipe>-<short id>`) with test-split metrics and moves `alias`.
        `cross_validation=k` trains k folds first (their means and deviations are the job's
        metrics); `search` makes it a search job (see `create_search_job`); `resources`
        (`{"num_workers": 2}`) trains on Ray Train workers when the server has a Ray cluster."""
        body = TrainingJobCreate.model_validate(
            {
                "recipe": recipe,
                "training_file": training_file,
                "validation_file": validation_file,
                "task": task,
                "base_model": base_model,
                "hyperparameters": dict(hyperparameters or {}),
                "early_stopping": early_stopping,
                "class_imbalance": class_imbalance,
                "validation_split": validation_split,
                "test_split": test_split,
                "seed": seed,
                "suffix": suffix,
                "model_name": model_name,
                "alias": alias,
                "cross_validation": cross_validation,
                "cross_validation_final": cross_validation_final,
                "search": search,
                "resources": resources,
            }
        )
        payload = body.model_dump(mode="json", exclude_none=True)
        return self._one("POST", "/v1/training/jobs", TrainingJobOut, json=payload)

    def create_search_job(
        self,
        recipe: str,
        training_file: str,
        *,
        space: Mapping[str, Any] | None = None,
        metric: str | None = None,
        direction: str | None = None,
        n_trials: int = 20,
        timeout_s: float | None = None,
        pruning: bool = True,
        startup_trials: int = 5,
        warmup_epochs: int = 0,
        **training: Any,
    ) -> TrainingJobOut:
        """Queue a hyperparameter search: `n_trials` trainings of `recipe` with
        hyperparameters from `space` (the recipe's default space when None), the best by
        `metric` registered. `training` takes `create_training_job`'s other arguments::

            job = client.create_search_job("textcnn", file_id, n_trials=20, space={
                "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
            for trial in client.training_job_trials(job.id):
                print(trial.number, trial.state, trial.value)
        """
        search = SearchIn(
            space=dict(space) if space is not None else None,
            metric=metric,
            direction=direction,
            n_trials=n_trials,
            timeout_s=timeout_s,
            pruning=pruning,
            startup_trials=startup_trials,
            warmup_epochs=warmup_epochs,
        )
        return self.create_training_job(recipe, training_file, search=search, **training)

    def training_job_trials(self, job_id: str) -> list[TrialOut]:
        """A search job's trials by number: hyperparameters, metric, state, duration."""
        return self._list("GET", f"{_job_path(job_id)}/trials", TrialOut)

    def list_training_jobs(
        self, *, after: str | None = None, limit: int = 20
    ) -> PageOut[TrainingJobOut]:
        """Newest first; pass the last id as `after` for the next page."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self._one("GET", "/v1/training/jobs", PageOut[TrainingJobOut], params=params)

    def get_training_job(self, job_id: str) -> TrainingJobOut:
        return self._one("GET", _job_path(job_id), TrainingJobOut)

    def cancel_training_job(self, job_id: str) -> TrainingJobOut:
        """Cancel at once when not started; a running job stops within seconds."""
        return self._one("POST", f"{_job_path(job_id)}/cancel", TrainingJobOut)

    def training_job_events(
        self, job_id: str, *, after: int | None = None, limit: int = 100, order: str = "asc"
    ) -> PageOut[TrainingEventOut]:
        params: dict[str, str | int] = {"limit": limit, "order": order}
        if after is not None:
            params["after"] = after
        path = f"{_job_path(job_id)}/events"
        return self._one("GET", path, PageOut[TrainingEventOut], params=params)

    def training_job_checkpoints(
        self, job_id: str, *, after: str | None = None, limit: int = 10
    ) -> PageOut[TrainingCheckpointOut]:
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        path = f"{_job_path(job_id)}/checkpoints"
        return self._one("GET", path, PageOut[TrainingCheckpointOut], params=params)

    def follow_training_job(
        self, job_id: str, *, poll_s: float = 1.0, after: int | None = None
    ) -> Iterator[TrainingJobUpdate]:
        """Yield the job and its new events every `poll_s` until it has finished (the last
        update holds the finished job and its last events)::

            for update in client.follow_training_job(job.id):
                for event in update.events:
                    print(event.message)
        """
        while True:
            events = self.training_job_events(job_id, after=after, limit=1000)
            if events.data:
                after = events.data[-1].id
            job = self.get_training_job(job_id)
            yield TrainingJobUpdate(job=job, events=list(events.data))
            if events.has_more:
                continue
            if job.finished:
                # Events written just before the job finished may follow this page.
                rest = self.training_job_events(job_id, after=after, limit=1000)
                if rest.data:
                    yield TrainingJobUpdate(job=job, events=list(rest.data))
                return
            time.sleep(poll_s)

    def wait_for_training_job(
        self, job_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None
    ) -> TrainingJobOut:
        """Block until the job has finished (succeeded, failed or cancelled)."""
        return wait_until(
            lambda: self.get_training_job(job_id),
            lambda job: job.finished,
            lambda job: f"job {job_id} is still {job.status}",
            poll_s=poll_s,
            timeout_s=timeout_s,
        )


def _job_path(job_id: str) -> str:
    return f"/v1/training/jobs/{segment(job_id)}"
