"""A search job's trials as Ray Tune trials, when the server has a Ray cluster.

The job's worker process stays its owner and Tune's driver. The study is the one a local
search keeps (`training.search_runner.Search`: the journal file, TPE seeded by the trials so
far, interrupted trials failed and queued again, the journal in the job's checkpoints after
every trial); Tune's `OptunaSearch` asks it for each trial's hyperparameters, and a
scheduler reports each trial's per-epoch validation metric to it and stops the trial when
Optuna's median pruner says so, as a local search prunes. Trials run as Tune function
trainables on the cluster's workers, as many at once as it has room for; each records the
Ray node and process it ran in. A completed trial's model comes back to the job's process
through a small actor only when it is the best so far, and `Search.publish` registers the
best as a local search does: the trials table and the registered version are the same.

Example::

    output = run_search_on_tune(kind, context)  # what SearchJobKind.run does with a cluster
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from openmaas.jobs.context import JobContext, JobStopped, finite
from openmaas.jobs.failures import public_message
from openmaas.jobs.publish import JobOutput
from openmaas.observability.tracing import (
    exporting_to,
    inject_context,
    mark_failed,
    remote_span,
)
from openmaas.scaleout.train_job import connect
from openmaas.scaleout.train_worker import SERVICE, read_files, write_files
from openmaas.training.recipe import Example, Recipe, TrainingContext, TrainingResult
from openmaas.training.requests import split_examples
from openmaas.training.search_runner import Search
from openmaas.training.search_space import SearchSpec

if TYPE_CHECKING:
    from optuna.trial import Trial

    from openmaas.training.kind import TrainingJobKind

NUMBER = "trial_number"  # the Optuna trial's number, in Tune's config and every report
FINAL = "final"  # set on a trial's last report (its result, or its error)


@dataclass(frozen=True, slots=True)
class TrialPayload:
    """What every trial trains on (put once in the object store)."""

    job_id: str
    task: str
    recipe: Recipe
    train: Sequence[Example]
    validation: Sequence[Example]
    test: Sequence[Example]
    hyperparameters: Mapping[str, Any]
    seed: int
    metric: str
    maximize: bool
    cpus: float
    # The job's trace: each trial's span continues it, exported to the driver's collector.
    traces_endpoint: str | None = None
    trace: Mapping[str, str] = field(default_factory=dict)


@ray.remote(num_cpus=0)
class TrialOutputs:
    """Completed trials' model files, held until the job's process takes or drops them."""

    def __init__(self) -> None:
        self.files: dict[int, dict[str, bytes]] = {}

    def put(self, number: int, files: dict[str, bytes]) -> None:
        self.files[number] = files

    def take(self, number: int) -> dict[str, bytes] | None:
        return self.files.pop(number, None)


def run_trial(config: dict[str, Any], payload: TrialPayload, outputs: Any) -> None:
    """One trial, on a Tune worker: train the recipe with the trial's hyperparameters."""
    import torch

    params = dict(config)
    number = int(params.pop(NUMBER))
    torch.set_num_threads(max(1, int(payload.cpus)))
    where = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    reported: list[float] = []

    def report(values: Mapping[str, Any]) -> None:
        tune.report({**values, NUMBER: number, **where})

    def on_metrics(step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        value = metrics.get(payload.metric)
        if value is None or not math.isfinite(value):
            return  # the per-step training loss
        reported.append(float(value))
        report({**finite(metrics), payload.metric: float(value), "epoch": epoch, "step": step})

    attributes = {"openmaas.job.id": payload.job_id, "openmaas.trial": number, **where}
    with (
        remote_span(
            "openmaas.search.trial",
            payload.traces_endpoint,
            payload.trace,
            attributes,
            service=SERVICE,
        ) as span,
        tempfile.TemporaryDirectory(prefix="openmaas-trial-") as tmp,
    ):
        output, work = Path(tmp) / "output", Path(tmp) / "work"
        output.mkdir()
        work.mkdir()
        try:
            hyperparameters = payload.recipe.resolve(
                {**payload.hyperparameters, **params}, len(payload.train)
            )
            result = payload.recipe.train(
                TrainingContext(
                    job_id=payload.job_id,
                    task=payload.task,
                    train=payload.train,
                    validation=payload.validation,
                    test=payload.test,
                    hyperparameters=hyperparameters,
                    seed=payload.seed,
                    output_dir=output,
                    work_dir=work,
                    on_metrics=on_metrics,
                )
            )
        except Exception as exc:  # one bad combination fails its trial, not the search
            mark_failed(exc)
            report({FINAL: 1, "error": public_message(exc), payload.metric: math.nan})
            return
        best = (max if payload.maximize else min)(reported) if reported else math.nan
        span.set_attribute(f"openmaas.trial.{payload.metric}", best)
        ray.get(outputs.put.remote(number, read_files(output)))
        report({FINAL: 1, "result": json.dumps(_result_dict(result)), payload.metric: best})


class NotForTunerRestore:
    """Tune pickles its configuration (searcher, scheduler, stopper) for `Tuner.restore`,
    which a job never uses: it resumes from its own study journal. The live job objects
    these hold (its database queue, its study's file lock) stay out of that pickle."""

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class StudySearcher(NotForTunerRestore, OptunaSearch):
    """Tune's Optuna searcher over the job's study, telling it what a local search tells."""

    def __init__(self, search: Search, outputs: Any, **options: Any) -> None:
        super().__init__(**options)
        # Optuna's median pruner, as the local search prunes (OptunaSearch sets none).
        study = self._ot_study
        assert study is not None  # set up by OptunaSearch, given a space, metric and mode
        study.pruner = search.study.pruner
        self.search: Search = search
        self.outputs: Any = outputs
        self.pruned: set[str] = set()
        self.started: dict[str, float] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        params = super().suggest(trial_id)
        if params is None:
            return None
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr("params", params)
        self.started[trial_id] = time.monotonic()
        number = ot_trial.number
        self.search.trial_started(number, params)
        return {**params, NUMBER: number}

    def report(self, trial_id: str, epoch: int, value: float) -> bool:
        """Report a trial's epoch to the study; True when the median pruner prunes it."""
        ot_trial: Trial = self._ot_trials[trial_id]
        ot_trial.report(value, epoch)
        if self.search.spec.pruning and ot_trial.should_prune():
            self.pruned.add(trial_id)
            return True
        return False

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Reported by the scheduler already."""

    def save(self, checkpoint_path: str) -> None:
        """Nothing for Tune's experiment checkpoint: the journal, stored with the job's
        checkpoints after every trial, is the study's."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        ot_trial = self._ot_trials[trial_id]
        last = result or {}
        if self.search.context.should_stop() and not last.get(FINAL):
            # Cut off by a cancel or a stopping worker: left running in the study, which
            # fails it and queues its hyperparameters again when the job resumes.
            return
        ot_trial.set_user_attr(
            "duration_s", round(time.monotonic() - self.started.get(trial_id, time.monotonic()), 3)
        )
        if "node_id" in last:
            ot_trial.set_user_attr("worker", {"node_id": last["node_id"], "pid": last["pid"]})
        number = ot_trial.number
        spec = self.search.spec
        saved = last.get("result")
        if trial_id in self.pruned:
            state, value, failure = TrialState.PRUNED, None, None
        elif error or last.get("error") or not isinstance(saved, str):
            state, value = TrialState.FAIL, None
            failure = str(last.get("error") or "the trial's Ray worker failed; see the Ray logs")
        elif not math.isfinite(float(last.get(spec.metric, math.nan))):
            state, value = TrialState.FAIL, None
            failure = f"the recipe reported no {spec.metric} (no validation split?)"
        else:
            state, value, failure = TrialState.COMPLETE, float(last[spec.metric]), None
        if state == TrialState.COMPLETE:
            trained = json.loads(str(saved))
            ot_trial.set_user_attr("metrics", finite(trained["metrics"]))
        files: dict[str, bytes] | None = ray.get(self.outputs.take.remote(number))
        self.search.finish_trial(ot_trial, state, value=value, error=failure)
        best = state == TrialState.COMPLETE and self.search.study.best_trial.number == number
        if best and files is not None:
            directory = self.search.root / f"trial-{number}" / "output"
            write_files(files, directory)
            params = ot_trial.user_attrs.get("params", {})
            self.search.keep_best(number, params, _training_result(trained), directory)
        self.search.save_study()


class MedianPruning(NotForTunerRestore, FIFOScheduler):
    """Optuna's median pruner as a Tune scheduler: each epoch's metric goes to the study,
    and a trial the pruner prunes is stopped; the job's per-epoch metrics are relayed."""

    def __init__(self, searcher: StudySearcher, context: JobContext) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.searcher = searcher
        self.context = context

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get(FINAL) or "epoch" not in result:
            return str(TrialScheduler.CONTINUE)
        metric = self.searcher.search.spec.metric
        value, epoch = float(result[metric]), int(result["epoch"])
        shown = {
            k: v
            for k, v in result.items()
            if k.startswith("val_") and isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.context.report_metrics(
            int(result.get("step", 0)), epoch, {**shown, "trial": result[NUMBER]}
        )
        if self.searcher.report(trial.trial_id, epoch, value):
            return str(TrialScheduler.STOP)
        return str(TrialScheduler.CONTINUE)


class JobStopper(NotForTunerRestore, tune.Stopper):
    """Stops every trial when the job is cancelled or its worker stops."""

    def __init__(self, context: JobContext) -> None:
        self.context = context

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.context.should_stop()


def run_search_on_tune(kind: TrainingJobKind, context: JobContext) -> JobOutput:
    """Run the job's study to its budget on Ray Tune and publish its best trial."""
    job = context.job
    if kind.ray_address is None:
        raise RuntimeError("no Ray address")  # the kind checks before calling
    spec = SearchSpec.from_dict(job.options["search"])
    recipe = kind.recipe(job.recipe)
    train, validation, test = split_examples(kind.datasets, job)
    root = context.scratch / "search"
    root.mkdir(parents=True, exist_ok=True)
    search = Search(kind, context, spec, root, (train, validation, test))
    connect(kind.ray_address)
    resources = job.options.get("resources") or {}
    cpus = float(resources.get("cpus_per_worker", 1.0))
    gpus = float(resources.get("gpus_per_worker", 0.0))
    have: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    at_once = max(1, int(float(have.get("CPU", 1.0)) // cpus))
    remaining = spec.n_trials - len(search.counted())
    outputs = TrialOutputs.remote()  # type: ignore[attr-defined]
    searcher = StudySearcher(
        search,
        outputs,
        space=spec.suggest,
        metric=spec.metric,
        mode="max" if spec.maximize else "min",
        sampler=search.study.sampler,
        study_name=job.id,
        storage=search.study._storage,
    )
    payload = TrialPayload(
        job_id=job.id,
        task=job.task,
        recipe=recipe,
        train=list(train),
        validation=list(validation),
        test=list(test),
        hyperparameters=dict(job.hyperparameters),
        seed=job.seed,
        metric=spec.metric,
        maximize=spec.maximize,
        cpus=cpus,
        traces_endpoint=exporting_to(),
        trace=inject_context(),
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, payload=payload, outputs=outputs),
        {"cpu": cpus, **({"gpu": gpus} if gpus else {})},
    )
    budget = None
    if spec.timeout_s is not None:
        budget = max(1.0, spec.timeout_s - search.seconds_used())
    context.message(
        f"Running {remaining} trials on Ray Tune, {at_once} at a time (cluster {kind.ray_address})"
    )
    storage = context.scratch / "ray-tune"
    try:
        if remaining > 0:
            tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=at_once),
                    scheduler=MedianPruning(searcher, context),
                    num_samples=remaining,
                    time_budget_s=budget,
                ),
                run_config=tune.RunConfig(
                    name=f"{job.id}-{job.attempts}",
                    storage_path=str(storage),
                    stop=JobStopper(context),
                    verbose=0,
                ),
            ).fit()
    finally:
        ray.kill(outputs)
        shutil.rmtree(storage, ignore_errors=True)
    if context.should_stop():
        search.save_study()
        raise JobStopped("the search stopped")
    return search.publish()


def _result_dict(result: TrainingResult) -> dict[str, Any]:
    return {
        "task": result.task,
        "runtime": result.runtime,
        "metrics": finite(result.metrics),
        "params": dict(result.params),
        "report": dict(result.report),
        "trained_tokens": result.trained_tokens,
    }


def _training_result(saved: Mapping[str, Any]) -> TrainingResult:
    return TrainingResult(
        task=saved["task"],
        runtime=saved["runtime"],
        metrics=saved["metrics"],
        params=saved["params"],
        report=saved["report"],
        trained_tokens=saved["trained_tokens"],
    )
