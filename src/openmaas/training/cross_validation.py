"""k-fold cross-validation inside one training job (`"cross_validation": k`).

The job's examples outside its validation split (its train and test splits together) are
dealt into k folds, stratified by label for a classifier (each fold holds each label in
about the proportion of the whole), seeded by the job's seed. Fold i trains the recipe on
the other k - 1 folds (early stopping on the job's validation split, as a plain job does)
and scores it on fold i. The job's metrics are the mean and standard deviation over the
folds of every test metric (`cv_<metric>_mean`, `cv_<metric>_std`; the standard deviation
of the k values, as scikit-learn's `cross_val_score(...).std()`).

The registered model is then trained on every fold (`"cross_validation_final": "all"`, the
default; its metrics are the cross-validated means: it has no held-out data left) or is the
best fold's (`"best_fold"`: by macro F1, else accuracy; its metrics are its own fold's).
Finished folds are stored in the job's checkpoints: a job whose worker died resumes at the
next fold.

Example::

    folds = stratified_folds(examples, 5, seed=7, task="text-classification")
    output = run_cross_validation(training_kind, context)  # what a job with k folds runs
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.jobs.context import JobContext, JobStopped, finite
from openmaas.jobs.publish import JobOutput
from openmaas.training.recipe import Example, TrainingResult, TrainingStopped
from openmaas.training.requests import split_examples
from openmaas.training.runner import TrainingRun, job_output, train_once

if TYPE_CHECKING:
    from openmaas.training.kind import TrainingJobKind

STATE_FILE = "cross_validation.json"
# Which fold is best, first found: what the fold's test split says of it.
RANKING_METRICS = ("macro_f1", "f1", "accuracy")


def stratified_folds(
    examples: Sequence[Example], k: int, *, seed: int, task: str
) -> list[list[int]]:
    """Indices of `examples` dealt into `k` folds; a classifier's stratified by label."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible shuffle, not a secret
    if task == "text-classification":
        by_label: dict[str, list[int]] = defaultdict(list)
        for index, example in enumerate(examples):
            by_label[str(example.get("label"))].append(index)
        order: list[int] = []
        for label in sorted(by_label):
            indices = by_label[label]
            rng.shuffle(indices)
            order.extend(indices)
    else:
        order = list(range(len(examples)))
        rng.shuffle(order)
    folds: list[list[int]] = [[] for _ in range(k)]
    for position, index in enumerate(order):
        folds[position % k].append(index)
    return folds


def summarize(folds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """`cv_<metric>_mean` and `cv_<metric>_std` of every metric all folds report."""
    names = set(folds[0]).intersection(*folds[1:]) if folds else set()
    summary: dict[str, float] = {}
    for name in sorted(names):
        values = [float(fold[name]) for fold in folds]
        mean = sum(values) / len(values)
        summary[f"cv_{name}_mean"] = mean
        summary[f"cv_{name}_std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return summary


def run_cross_validation(kind: TrainingJobKind, context: JobContext) -> JobOutput:
    job = context.job
    k = int(job.options["cross_validation"])
    final = str(job.options.get("cross_validation_final") or "all")
    train, validation, test = split_examples(kind.datasets, job)
    pool = [*train, *test]
    folds = stratified_folds(pool, k, seed=job.seed, task=job.task)
    root = context.scratch / "cross_validation"
    root.mkdir(parents=True, exist_ok=True)
    scores = _restore(context, root)
    for i, held in enumerate(folds):
        if str(i) in scores:
            continue
        if context.should_stop():
            raise JobStopped(f"stopped before fold {i + 1} of {k}")
        held_set = set(held)
        fold_train = [pool[j] for j in range(len(pool)) if j not in held_set]
        fold_test = [pool[j] for j in held]
        context.message(
            f"Fold {i + 1}/{k}: training on {len(fold_train)} examples, scoring on {len(fold_test)}"
        )
        result = _train(kind, context, root / f"fold-{i}", fold_train, validation, fold_test, i)
        scores[str(i)] = finite(result.metrics)
        context.message(f"Fold {i + 1}/{k}: {_shown(scores[str(i)])}")
        if final == "best_fold" and _best(scores) == str(i):
            _keep(root, i, result, root / f"fold-{i}" / "output")
        shutil.rmtree(root / f"fold-{i}", ignore_errors=True)
        _save(context, root, scores)
    per_fold = [scores[str(i)] for i in range(k)]
    summary = summarize(per_fold)
    context.message(
        f"Cross-validation over {k} folds: "
        + ", ".join(
            f"{name.removeprefix('cv_').removesuffix('_mean')} "
            f"{value:.4f} ± {summary[name.removesuffix('_mean') + '_std']:.4f}"
            for name, value in summary.items()
            if name.endswith("_mean")
        )
    )
    table = {
        "k": k,
        "final": final,
        "folds": [{"fold": i, "size": len(folds[i]), **per_fold[i]} for i in range(k)],
        "mean": {
            n.removeprefix("cv_").removesuffix("_mean"): v
            for n, v in summary.items()
            if n.endswith("_mean")
        },
        "std": {
            n.removeprefix("cv_").removesuffix("_std"): v
            for n, v in summary.items()
            if n.endswith("_std")
        },
    }
    if final == "best_fold":
        best = int(_best(scores))
        saved = _read(root / "best" / "result.json")
        if saved is not None and saved.get("fold") == best:
            result = TrainingResult(**{k_: v for k_, v in saved.items() if k_ != "fold"})
            output = root / "best" / "output"
        else:
            context.message(f"Training fold {best + 1} again: its model is not on this machine")
            held_set = set(folds[best])
            result = _train(
                kind,
                context,
                root / "final",
                [pool[j] for j in range(len(pool)) if j not in held_set],
                validation,
                [pool[j] for j in folds[best]],
                best,
            )
            output = root / "final" / "output"
        table["best_fold"] = best
        metrics = {**summary}
    else:
        context.message(f"Training the final model on all {len(pool)} examples of the folds")
        # No example is left to score it on: its registered metrics are the folds' means,
        # and the validation split stands in for the recipe's test pass.
        result = _train(kind, context, root / "final", pool, validation, validation or pool, k)
        output = root / "final" / "output"
        metrics = {
            **summary,
            **{
                n.removeprefix("cv_").removesuffix("_mean"): v
                for n, v in summary.items()
                if n.endswith("_mean")
            },
        }
    return job_output(job, result, output, extra={"cross_validation": table}, metrics=metrics)


def _train(
    kind: TrainingJobKind,
    context: JobContext,
    directory: Path,
    train: Sequence[Example],
    validation: Sequence[Example],
    test: Sequence[Example],
    fold: int,
) -> TrainingResult:
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "output").mkdir(parents=True)
    (directory / "work").mkdir()

    def on_metrics(step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        context.report_metrics(step, epoch, {**metrics, "fold": float(fold)})

    try:
        return train_once(
            kind,
            context,
            TrainingRun(
                train=train,
                validation=validation,
                test=test,
                hyperparameters=context.job.hyperparameters,
                output_dir=directory / "output",
                work_dir=directory / "work",
                on_message=lambda level, text: (
                    context.message(text, level) if level != "info" else None
                ),
                on_metrics=on_metrics,
                should_stop=context.should_stop,
            ),
        )
    except TrainingStopped as exc:
        raise JobStopped(str(exc)) from exc


def _best(scores: Mapping[str, Mapping[str, float]]) -> str:
    def rank(fold: str) -> float:
        metrics = scores[fold]
        return next((metrics[n] for n in RANKING_METRICS if n in metrics), 0.0)

    return max(scores, key=rank)


def _keep(root: Path, fold: int, result: TrainingResult, output: Path) -> None:
    best = root / "best"
    shutil.rmtree(best, ignore_errors=True)
    best.mkdir()
    shutil.move(str(output), best / "output")
    (best / "result.json").write_text(
        json.dumps(
            {
                "fold": fold,
                "task": result.task,
                "runtime": result.runtime,
                "metrics": finite(result.metrics),
                "params": dict(result.params),
                "report": dict(result.report),
                "trained_tokens": result.trained_tokens,
            }
        ),
        encoding="utf-8",
    )


def _save(context: JobContext, root: Path, scores: Mapping[str, Mapping[str, float]]) -> None:
    state = root / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    (state / STATE_FILE).write_text(json.dumps({"folds": scores}), encoding="utf-8")
    context.save_checkpoint(state, len(scores), 0, {"folds": float(len(scores))})


def _restore(context: JobContext, root: Path) -> dict[str, dict[str, float]]:
    restored = context.restore_checkpoint(root / "restored")
    if restored is None:
        return {}
    saved = _read(restored.directory / STATE_FILE)
    folds = saved.get("folds") if saved is not None else None
    return {str(k): dict(v) for k, v in folds.items()} if isinstance(folds, dict) else {}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _shown(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
