"""OpenAI's fine-tuning dialect over the training job kind: `model` names a recipe (trained
from scratch) or a registered base model (fine-tuned by the recipe that fits it), and
OpenAI's hyperparameter names (`n_epochs`, `batch_size`, `learning_rate_multiplier`) are
translated into the recipe's own. The response shapes are in `protocol.training`, built by
`api.convert.training`; the server's training kind comes from
`api.training_jobs.training_kind`.

Example::

    request = openai_request(training_kind(services.jobs), caller=principal, model="textcnn",
                             training_file="file-1a2b", hyperparameters={"n_epochs": 3})
    job = services.jobs.create("training", request, caller=principal)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openmaas.auth.access import require_caller
from openmaas.auth.entities import Principal
from openmaas.training.hyperparameters import BATCH_NAMES, EPOCH_NAMES, LEARNING_RATE_NAMES
from openmaas.training.kind import TrainingJobKind
from openmaas.training.recipe import Recipe
from openmaas.training.requests import JobRequest, param_name


def openai_request(
    kind: TrainingJobKind,
    *,
    caller: Principal,
    model: str,
    training_file: str,
    validation_file: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> JobRequest:
    """Map OpenAI's create call onto a recipe: `model` names a recipe (trained from
    scratch) or a registered base model (fine-tuned by the recipe that fits it)."""
    require_caller(caller)
    given = {k: v for k, v in (hyperparameters or {}).items() if v is not None}
    recipe_name: str | None
    base: str | None = None
    if model in kind.recipes:
        recipe_name = model
    else:
        base = model
        recipe_name = kind.recipe_for_base(model, training_file, caller=caller)
    recipe = kind.recipe(recipe_name)
    return JobRequest(
        training_file=training_file,
        validation_file=validation_file,
        recipe=recipe_name,
        base_model=base,
        hyperparameters=from_openai_names(recipe, given),
        suffix=suffix,
        seed=seed,
        options={**(options or {}), "model": model, "openai_hyperparameters": given},
    )


def from_openai_names(recipe: Recipe, given: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's n_epochs, batch_size and learning_rate_multiplier in the recipe's names
    ("auto" keeps the recipe's default); other names pass through as the recipe's own."""
    defaults = recipe.defaults()
    mapped: dict[str, Any] = {}
    for option, value in given.items():
        if value == "auto":
            continue
        if option == "n_epochs":
            mapped[param_name(recipe, EPOCH_NAMES, "hyperparameters.n_epochs")] = value
        elif option == "batch_size":
            mapped[param_name(recipe, BATCH_NAMES, "hyperparameters.batch_size")] = value
        elif option == "learning_rate_multiplier" and option not in defaults:
            name = param_name(recipe, LEARNING_RATE_NAMES, "hyperparameters." + option)
            mapped[name] = float(defaults[name]) * float(value)
        else:
            mapped[option] = value
    return mapped
