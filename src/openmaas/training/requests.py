"""What a training job request says, and the pieces of it that both sides share: the
request itself, the dataset source, the job's reproducible split, the installed recipes
and how job options map onto a recipe's hyperparameters.

Example::

    request = JobRequest(training_file="file-1a2b", recipe="textcnn", seed=7)
    recipes = load_recipes(["my_package.recipes:MyRecipe"])
    train, validation, test = split_examples(datasets, job)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.errors import InvalidRequest, OpenMaaSError
from openmaas.jobs.entities import Job
from openmaas.training.recipe import Example, Recipe

# Our job options and the recipe hyperparameters that carry them (first name the recipe has).
EARLY_STOPPING_PARAMS = {
    "patience": ("patience", "early_stopping_patience"),
    "min_delta": ("early_stopping_min_delta", "min_delta"),
    "metric": ("early_stopping_metric",),
}
CLASS_IMBALANCE_PARAMS = ("class_weighting", "class_imbalance")


class DatasetSource(Protocol):
    """What jobs need of the dataset service (`datasets.service.DatasetService`): a file's
    examples, and its reproducible (train, validation, test) split."""

    def load(self, dataset_id: str, *, caller: Principal) -> tuple[Any, Sequence[Example]]: ...

    def splits(
        self,
        dataset_id: str,
        *,
        caller: Principal,
        seed: int = 0,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
    ) -> tuple[Sequence[Example], Sequence[Example], Sequence[Example]]: ...


@dataclass(frozen=True, slots=True)
class EarlyStopping:
    patience: int
    min_delta: float = 0.0
    metric: str | None = None  # the recipe's default when None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a caller asks for. `recipe` may be None when `base_model` implies one."""

    training_file: str
    recipe: str | None = None
    base_model: str | None = None
    task: str | None = None
    validation_file: str | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    early_stopping: EarlyStopping | None = None
    class_imbalance: str | None = None  # none | weighted | oversample
    suffix: str | None = None
    seed: int | None = None
    model_name: str | None = None  # register as the next version of this model
    alias: str | None = None
    validation_split: float = 0.1  # of the training file, when no validation file is given
    test_split: float = 0.1  # of the training file: the registered metrics come from it
    options: Mapping[str, Any] = field(default_factory=dict)  # recorded as given (OpenAI)
    # A hyperparameter search (a `search` job, `training.search_space`): space, metric, budget.
    search: Mapping[str, Any] | None = None
    # k-fold cross-validation (`training.cross_validation`): k, and which model is registered.
    cross_validation: int | None = None
    cross_validation_final: str = "all"  # all | best_fold
    # Ray Train workers (`scaleout.train_job`): num_workers, cpus_per_worker, gpus_per_worker.
    resources: Mapping[str, Any] | None = None


def split_examples(
    datasets: DatasetSource, job: Job
) -> tuple[Sequence[Example], Sequence[Example], Sequence[Example]]:
    """The job's train, validation and test examples: the same on every run of the job.
    (Any project's files: who may use them was checked when the job was created.)"""
    test = float(job.options.get("test_split", 0.1))
    if job.validation_file is not None:
        train, _, tested = datasets.splits(
            job.training_file, caller=SYSTEM, seed=job.seed, ratios=(1 - test, 0.0, test)
        )
        _, given = datasets.load(job.validation_file, caller=SYSTEM)
        return train, given, tested
    validation = float(job.options.get("validation_split", 0.1))
    train, held, tested = datasets.splits(
        job.training_file,
        caller=SYSTEM,
        seed=job.seed,
        ratios=(1 - validation - test, validation, test),
    )
    return train, held, tested


def load_recipes(extra: Sequence[str] = ()) -> dict[str, Recipe]:
    """The built-in recipes plus `extra` ones, each `module:attribute` naming a Recipe
    instance or class (OPENMAAS_EXTRA_RECIPES)."""
    from openmaas.training.recipes import RECIPES

    found: dict[str, Recipe] = dict(RECIPES)
    for target in extra:
        module_name, _, attribute = target.partition(":")
        if not module_name or not attribute:
            raise OpenMaaSError(f"extra recipe {target!r}: write it as module:attribute")
        value = getattr(importlib.import_module(module_name), attribute)
        recipe = value() if isinstance(value, type) else value
        if not isinstance(recipe, Recipe):
            raise OpenMaaSError(f"extra recipe {target!r} is not a Recipe")
        found[recipe.name] = recipe
    return found


def param_name(recipe: Recipe, candidates: Sequence[str], param: str) -> str:
    """The first of `candidates` that names one of the recipe's hyperparameters."""
    defaults = recipe.defaults()
    for name in candidates:
        if name in defaults:
            return name
    raise InvalidRequest(
        f"recipe {recipe.name!r} has no hyperparameter for {param} ({' or '.join(candidates)})",
        param=param,
    )
