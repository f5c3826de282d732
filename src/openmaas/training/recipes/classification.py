"""What every text-classification recipe shares: hyperparameter validation at `resolve`, the
label set and label indices of the splits, and the `TrainingResult` built from the test split.

Torch-free: the job system imports the recipes to validate a job's hyperparameters, and the
networks are imported only inside `train`.

Example::

    class MyRecipe(ClassificationRecipe):
        name = "mine"

        def defaults(self) -> dict[str, Any]:
            return {**COMMON_DEFAULTS, "n_epochs": 3}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from openmaas.training.hyperparameters import LoopSettings, fraction, positive_int
from openmaas.training.recipe import Example, Recipe, TrainingContext, TrainingResult

if TYPE_CHECKING:
    from openmaas.training.loop import Evaluation, LoopOutcome

TASK = "text-classification"


class ClassificationRecipe(Recipe):
    """A text-classification recipe whose shared hyperparameters are checked at `resolve`."""

    tasks = (TASK,)

    def resolve(self, given: Mapping[str, Any], n_examples: int) -> dict[str, Any]:
        hp = super().resolve(given, n_examples)
        self.loop_settings(hp)
        fraction(hp, "dropout")
        positive_int(hp, "max_length")
        self.check(hp)
        return hp

    def loop_settings(self, hp: Mapping[str, Any]) -> LoopSettings:
        return LoopSettings.from_hyperparameters(hp)

    def check(self, hp: Mapping[str, Any]) -> None:
        """Raise ValueError for a bad recipe-specific value (architecture sizes)."""


@dataclass(frozen=True, slots=True)
class Split:
    texts: list[str]
    labels: list[int]  # indices into LabeledSplits.labels

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, slots=True)
class LabeledSplits:
    """The context's splits with labels as indices into `labels` (sorted: the union of every
    split's labels, so a label seen only in the test split still counts against the model)."""

    labels: tuple[str, ...]
    train: Split
    validation: Split
    test: Split

    @classmethod
    def from_context(cls, ctx: TrainingContext) -> LabeledSplits:
        splits = {"train": ctx.train, "validation": ctx.validation, "test": ctx.test}
        for name, examples in splits.items():
            for i, example in enumerate(examples):
                if not isinstance(example.get("text"), str) or example.get("label") is None:
                    raise ValueError(
                        f"{name} example {i} needs a string 'text' and a 'label' "
                        f"(text-classification examples are {{'text': ..., 'label': ...}})"
                    )
        if not ctx.train:
            raise ValueError("the training split is empty")
        labels = tuple(sorted({str(e["label"]) for examples in splits.values() for e in examples}))
        if len(labels) < 2:
            raise ValueError(f"classification needs at least 2 labels; the data has {labels}")
        index = {label: i for i, label in enumerate(labels)}

        def indexed(examples: Sequence[Example]) -> Split:
            return Split(
                texts=[str(e["text"]) for e in examples],
                labels=[index[str(e["label"])] for e in examples],
            )

        return cls(labels, indexed(ctx.train), indexed(ctx.validation), indexed(ctx.test))

    def evaluation_split(self) -> tuple[str, Split] | None:
        """The split the registered metrics come from: test, else validation."""
        if len(self.test):
            return "test", self.test
        if len(self.validation):
            return "validation", self.validation
        return None


def training_report(outcome: LoopOutcome, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """How the loop ran, for the registered report (every recipe on the shared loop)."""
    return {
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "best_epoch": outcome.best_epoch,
        "best_validation_value": outcome.best_value,
        "early_stopping_metric": hyperparameters.get("early_stopping_metric"),
        "stopped_early": outcome.stopped_early,
        "trained_examples": outcome.trained_examples,
    }


class Evaluated(Protocol):
    """A split's evaluation, as `evaluated_result` reads it (`loop.Evaluation`, and
    `token_loop.TaggerEvaluation` for taggers)."""

    @property
    def loss(self) -> float: ...

    @property
    def metrics(self) -> SummarizedMetrics: ...


class SummarizedMetrics(Protocol):
    def summary(self) -> dict[str, float]: ...

    def report(self) -> dict[str, Any]: ...


def classification_result(
    ctx: TrainingContext,
    *,
    recipe: str,
    runtime: str,
    hyperparameters: Mapping[str, Any],
    labels: Sequence[str],
    outcome: LoopOutcome,
    evaluation: Evaluation | None,
    evaluated_on: str | None,
    params: Mapping[str, Any] | None = None,
) -> TrainingResult:
    return evaluated_result(
        ctx,
        task=TASK,
        recipe=recipe,
        runtime=runtime,
        hyperparameters=hyperparameters,
        labels=labels,
        outcome=outcome,
        evaluation=evaluation,
        evaluated_on=evaluated_on,
        params=params,
    )


def evaluated_result(
    ctx: TrainingContext,
    *,
    task: str,
    recipe: str,
    runtime: str,
    hyperparameters: Mapping[str, Any],
    labels: Sequence[str],
    outcome: LoopOutcome,
    evaluation: Evaluated | None,
    evaluated_on: str | None,
    params: Mapping[str, Any] | None = None,
) -> TrainingResult:
    """The result of a recipe that trains a labelled task: the evaluated split's metrics
    (said in the job's events too), the labels, hyperparameters and a training report."""
    if evaluation is None:
        ctx.message("no test or validation examples: the model is registered without metrics")
    else:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in evaluation.metrics.summary().items())
        ctx.message(f"{evaluated_on} split: {shown}")
    report: dict[str, Any] = {"training": training_report(outcome, hyperparameters)}
    if evaluation is not None:
        report.update(evaluation.metrics.report(), split=evaluated_on, loss=evaluation.loss)
    return TrainingResult(
        task=task,
        runtime=runtime,
        metrics=evaluation.metrics.summary() if evaluation is not None else {},
        params={
            "recipe": recipe,
            "labels": list(labels),
            "hyperparameters": dict(hyperparameters),
            **(params or {}),
        },
        trained_tokens=outcome.trained_tokens,
        report=report,
    )
