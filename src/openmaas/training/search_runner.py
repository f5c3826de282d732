"""A search job's run: an Optuna study (TPE sampler, median pruning) whose trials train the
job's recipe, one after another on this worker; the best trial's model is what the job
publishes, with every trial in its metadata.

Each trial reports its per-epoch validation metric to the study (`trial.report`); when the
pruner says the trial is worse than the median of earlier trials at that epoch, the trial's
`should_stop` turns true and its training loop stops at the next step. The study lives in a
journal file under the job's scratch directory, copied into the job's checkpoints after every
trial: a job whose worker died (SIGKILL, a lost machine) resumes from the stored study, the
trial it was running marked failed and tried again with the same hyperparameters.

Every trial's start and end is a `trial` event on the job (its hyperparameters, metric,
state, duration): `GET /v1/training/jobs/{id}/trials` lists them.

Example::

    output = run_search(training_kind, context)  # what SearchJobKind.run does
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.errors import OpenMaaSError
from openmaas.jobs.context import JobContext, JobStopped, finite
from openmaas.jobs.failures import public_message
from openmaas.jobs.publish import JobOutput
from openmaas.training.recipe import Example, TrainingResult, TrainingStopped
from openmaas.training.requests import split_examples
from openmaas.training.runner import TrainingRun, job_output, train_once
from openmaas.training.search_space import SearchSpec

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from openmaas.training.kind import TrainingJobKind

logger = logging.getLogger("openmaas.training.search")

TRIAL_EVENT = "trial"  # the type of a job event that carries {"trial": record}
STUDY_FILE = "study.journal"
BEST_DIRECTORY = "best"  # the best trial's model so far, and result.json
# A stale journal lock (its writer was killed mid-write) is broken after this long.
LOCK_GRACE_S = 10
# TPE proposes at random for this share of the trials (at most 10) before it models them.
RANDOM_SHARE = 4


def run_search(kind: TrainingJobKind, context: JobContext) -> JobOutput:
    """Run the job's study to its budget and publish its best trial."""
    job = context.job
    spec = SearchSpec.from_dict(job.options["search"])
    kind.recipe(job.recipe)  # installed on this worker, or the job fails naming it
    train, validation, test = split_examples(kind.datasets, job)
    root = context.scratch / "search"
    root.mkdir(parents=True, exist_ok=True)
    search = Search(kind, context, spec, root, (train, validation, test))
    search.run()
    return search.publish()


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """A trial as the job lists it."""
    state = {
        "COMPLETE": "complete",
        "PRUNED": "pruned",
        "FAIL": "failed",
        "RUNNING": "running",
        "WAITING": "waiting",
    }[trial.state.name]
    attrs = trial.user_attrs
    value = trial.value if trial.values else None
    return {
        "number": trial.number,
        "state": state,
        "params": attrs.get("params", dict(trial.params)),
        "value": value if value is None or math.isfinite(value) else None,
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "epochs": len(trial.intermediate_values),
        "metrics": attrs.get("metrics", {}),
        "duration_s": attrs.get("duration_s"),
        "error": attrs.get("error"),
        "worker": attrs.get("worker"),  # where a Ray Tune trial ran: node id, pid
    }


class Search:
    """One run of a search job: opens (or resumes) its study and runs trials to the budget."""

    def __init__(
        self,
        kind: TrainingJobKind,
        context: JobContext,
        spec: SearchSpec,
        root: Path,
        splits: tuple[Sequence[Example], Sequence[Example], Sequence[Example]],
    ) -> None:
        self.kind = kind
        self.context = context
        self.job = context.job
        self.spec = spec
        self.root = root
        self.train, self.validation, self.test = splits
        self.study = self._open_study()
        self._recover_interrupted()

    # -- the study -----------------------------------------------------------------------------

    def _open_study(self) -> optuna.Study:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are job events
        path = self.root / STUDY_FILE
        if not path.is_file():
            restored = self.context.restore_checkpoint(self.root / "restored")
            if restored is not None and (restored.directory / STUDY_FILE).is_file():
                shutil.copy(restored.directory / STUDY_FILE, path)
        lock = JournalFileOpenLock(str(path), grace_period=LOCK_GRACE_S)
        storage = JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
        study = optuna.create_study(
            study_name=self.job.id,
            storage=storage,
            direction="maximize" if self.spec.maximize else "minimize",
            load_if_exists=True,
        )
        done = len(study.get_trials(deepcopy=False))
        if done:
            self.context.message(f"Resuming the search from its stored study: {done} trials")
        # Seeded by the trials so far: a resumed study does not propose its first ones again.
        study.sampler = optuna.samplers.TPESampler(
            seed=(self.job.seed + done) % 2**32,
            n_startup_trials=max(1, min(10, self.spec.n_trials // RANDOM_SHARE)),
        )
        study.pruner = (
            optuna.pruners.MedianPruner(
                n_startup_trials=self.spec.startup_trials,
                n_warmup_steps=self.spec.warmup_epochs,
            )
            if self.spec.pruning
            else optuna.pruners.NopPruner()
        )
        return study

    def _recover_interrupted(self) -> None:
        """A trial still running in the stored study was cut off with its worker: failed,
        and its hyperparameters queued to be tried again."""
        from optuna.trial import TrialState

        storage = self.study._storage
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            message = "interrupted: its worker stopped; tried again with the same hyperparameters"
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            storage.set_trial_user_attr(trial._trial_id, "error", message)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            self.study.enqueue_trial(dict(trial.params), skip_if_exists=False)
            self._event(self.study.trials[trial.number], f"Trial {trial.number} {message}")

    def counted(self) -> list[FrozenTrial]:
        """The trials that count against n_trials: finished, not cut off by a lost worker."""
        return [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.state.is_finished() and not t.user_attrs.get("interrupted")
        ]

    def seconds_used(self) -> float:
        return sum(
            float(t.user_attrs.get("duration_s", 0.0))
            for t in self.study.get_trials(deepcopy=False)
        )

    # -- the trials ----------------------------------------------------------------------------

    def run(self) -> None:
        spec = self.spec
        while len(self.counted()) < spec.n_trials:
            if spec.timeout_s is not None and self.seconds_used() >= spec.timeout_s:
                self.context.message(
                    f"Search timeout ({spec.timeout_s:g} s of trials) reached after "
                    f"{len(self.counted())} trials"
                )
                break
            if self.context.should_stop():
                self.save_study()
                raise JobStopped("the search stopped between trials")
            self._run_trial(self.study.ask())
            self.save_study()

    def _run_trial(self, trial: optuna.Trial) -> None:
        from optuna.trial import TrialState

        number = trial.number
        params = self.spec.suggest(trial)
        trial.set_user_attr("params", params)
        self.trial_started(number, params)
        started = time.monotonic()
        directory = self.root / f"trial-{number}"
        pruned = False
        reported: dict[int, float] = {}

        def on_metrics(step: int, epoch: int, metrics: Mapping[str, float]) -> None:
            nonlocal pruned
            value = metrics.get(self.spec.metric)
            if value is None or not math.isfinite(value):
                return  # the per-step training loss
            reported[epoch] = float(value)
            trial.report(float(value), epoch)
            self.context.report_metrics(step, epoch, {**metrics, "trial": number})
            if self.spec.pruning and trial.should_prune():
                pruned = True

        try:
            result = self._train(params, directory, on_metrics, lambda: pruned)
        except TrainingStopped:
            if not pruned:  # the job is stopping: the study resumes with this trial again
                self.save_study()
                raise JobStopped(f"the search stopped during trial {number}") from None
            self._finish(trial, TrialState.PRUNED, started)
            shutil.rmtree(directory, ignore_errors=True)
            return
        except (JobStopped, OpenMaaSError) as exc:
            if isinstance(exc, JobStopped) or exc.status_code >= 500:
                raise
            self._finish(trial, TrialState.FAIL, started, error=exc.message)
            shutil.rmtree(directory, ignore_errors=True)
            return
        except Exception as exc:  # one bad combination fails its trial, not the search
            logger.warning("job %s: trial %d failed", self.job.id, number, exc_info=exc)
            self._finish(trial, TrialState.FAIL, started, error=public_message(exc))
            shutil.rmtree(directory, ignore_errors=True)
            return
        if pruned:  # told to prune after its last epoch: pruned all the same
            self._finish(trial, TrialState.PRUNED, started)
            shutil.rmtree(directory, ignore_errors=True)
            return
        if not reported:
            self._finish(
                trial,
                TrialState.FAIL,
                started,
                error=f"the recipe reported no {self.spec.metric} (no validation split?)",
            )
            return
        best = max(reported.values()) if self.spec.maximize else min(reported.values())
        trial.set_user_attr("metrics", finite(result.metrics))
        self._finish(trial, TrialState.COMPLETE, started, value=best)
        if self.study.best_trial.number == number:
            self.keep_best(number, params, result, directory / "output")
        shutil.rmtree(directory, ignore_errors=True)

    def trial_started(self, number: int, params: Mapping[str, Any]) -> None:
        self._event(self.study.trials[number], f"Trial {number} started: {_shown(params)}")

    def _train(
        self,
        params: Mapping[str, Any],
        directory: Path,
        on_metrics: Any,
        pruned: Any,
    ) -> TrainingResult:
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "output").mkdir(parents=True)
        (directory / "work").mkdir()
        recipe = self.kind.recipe(self.job.recipe)
        hyperparameters = recipe.resolve({**self.job.hyperparameters, **params}, len(self.train))
        should_stop = self.context.should_stop

        def forward(level: str, text: str) -> None:
            if level != "info":
                self.context.message(text, level)

        return train_once(
            self.kind,
            self.context,
            TrainingRun(
                train=self.train,
                validation=self.validation,
                test=self.test,
                hyperparameters=hyperparameters,
                output_dir=directory / "output",
                work_dir=directory / "work",
                on_message=forward,
                on_metrics=on_metrics,
                # Trials are short and start over when cut off: no checkpoints of their own.
                should_stop=lambda: bool(pruned()) or should_stop(),
            ),
        )

    def _finish(
        self,
        trial: optuna.Trial,
        state: Any,
        started: float,
        *,
        value: float | None = None,
        error: str | None = None,
    ) -> None:
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
        self.finish_trial(trial, state, value=value, error=error)

    def finish_trial(
        self, trial: optuna.Trial, state: Any, *, value: float | None, error: str | None
    ) -> None:
        """Tell the study how the trial ended (its `duration_s` set) and say so in an event."""
        if error is not None:
            trial.set_user_attr("error", error)
        self.study.tell(trial.number, value, state=state)
        frozen = self.study.trials[trial.number]
        record = trial_record(frozen)
        shown = f"{self.spec.metric}={record['value']:.4f}" if record["value"] is not None else ""
        detail = f": {error}" if error else (f" ({shown})" if shown else "")
        self._event(
            frozen,
            f"Trial {trial.number} {record['state']} after {record['epochs']} epochs "
            f"in {float(record['duration_s'] or 0.0):.1f} s{detail}",
        )

    def _event(self, trial: FrozenTrial, message: str) -> None:
        self.context.event(message, type=TRIAL_EVENT, data={"trial": trial_record(trial)})

    def save_study(self) -> None:
        """The journal into the job's checkpoints: another machine resumes from it."""
        state = self.root / "state"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir()
        shutil.copy(self.root / STUDY_FILE, state / STUDY_FILE)
        counted = self.counted()
        self.context.save_checkpoint(state, len(counted), 0, {"trials": float(len(counted))})

    # -- the best trial ------------------------------------------------------------------------

    def keep_best(
        self, number: int, params: Mapping[str, Any], result: TrainingResult, output: Path
    ) -> None:
        best = self.root / BEST_DIRECTORY
        shutil.rmtree(best, ignore_errors=True)
        best.mkdir()
        shutil.move(str(output), best / "output")
        (best / "result.json").write_text(
            json.dumps(
                {
                    "number": number,
                    "params": dict(params),
                    "task": result.task,
                    "runtime": result.runtime,
                    "metrics": finite(result.metrics),
                    "params_out": dict(result.params),
                    "report": dict(result.report),
                    "trained_tokens": result.trained_tokens,
                }
            ),
            encoding="utf-8",
        )

    def publish(self) -> JobOutput:
        trials = self.study.get_trials(deepcopy=False)
        try:
            best = self.study.best_trial
        except ValueError:
            errors = [str(t.user_attrs["error"]) for t in trials if t.user_attrs.get("error")]
            last = f"; the last error: {errors[-1]}" if errors else ""
            raise OpenMaaSError(
                f"no trial of the search completed ({len(trials)} tried: pruned or failed){last}"
            ) from None
        kept = self.root / BEST_DIRECTORY
        saved = _read_json(kept / "result.json")
        if saved is not None and saved.get("number") == best.number:
            result = TrainingResult(
                task=saved["task"],
                runtime=saved["runtime"],
                metrics=saved["metrics"],
                params=saved["params_out"],
                report=saved["report"],
                trained_tokens=saved["trained_tokens"],
            )
            output = kept / "output"
        else:
            self.context.message(
                f"Training the best trial ({best.number}) again: its model is not on this machine"
            )
            directory = self.root / "final"
            try:
                result = self._train(
                    best.user_attrs.get("params", best.params), directory, _ignore, lambda: False
                )
            except TrainingStopped as exc:
                raise JobStopped(str(exc)) from exc
            output = directory / "output"
        recipe = self.kind.recipe(self.job.recipe)
        params = best.user_attrs.get("params", best.params)
        hyperparameters = recipe.resolve({**self.job.hyperparameters, **params}, len(self.train))
        table = [trial_record(t) for t in trials]
        states = [row["state"] for row in table]
        self.context.message(
            f"Best trial {best.number}: {self.spec.metric}={best.value:.4f} "
            f"({states.count('complete')} complete, {states.count('pruned')} pruned, "
            f"{states.count('failed')} failed)"
        )
        return job_output(
            self.job,
            result,
            output,
            hyperparameters=hyperparameters,
            extra={
                "search": {
                    **self.spec.to_dict(),
                    "best_trial": best.number,
                    "best_value": best.value,
                    "trials": table,
                }
            },
            metrics={self.spec.metric: float(best.value or 0.0)},
        )


def _ignore(step: int, epoch: int, metrics: Mapping[str, float]) -> None:
    """Metrics of a final retraining: the trial reported them already."""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _shown(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in params.items()
    )
