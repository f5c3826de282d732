"""The `resources` of a training job: how many Ray Train workers, with what each.

A job that names them trains data-parallel on the Ray cluster the server is configured with
(`OPENMAAS_RAY_ADDRESS`; `scaleout.train_job` runs it); without a cluster they are refused,
since one worker on this machine is what a job gets by leaving them out. Only the recipes
whose network trains in the shared loop over a word-level vocabulary (`Recipe.data_parallel`)
split their batches across workers. A search job takes them per trial (one worker each).

Example::

    resources = check_resources({"num_workers": 2}, recipe, ray_address="10.0.0.5:6379")
    # {"num_workers": 2, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openmaas.errors import InvalidRequest
from openmaas.training.recipe import Recipe

MAX_WORKERS = 256
MAX_CPUS_PER_WORKER = 1024
MAX_GPUS_PER_WORKER = 64
DEFAULTS: dict[str, float] = {"num_workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}
PARAM = "resources"


def check_resources(
    raw: Mapping[str, Any] | None,
    recipe: Recipe,
    *,
    ray_address: str | None,
    hyperparameters: Mapping[str, Any],
    cross_validation: int | None = None,
    search: bool = False,
    base_model: str | None = None,
) -> dict[str, Any] | None:
    """The checked resources (defaults filled in), or None when none are asked for; 400
    naming the field that is wrong."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidRequest(
            "resources must be an object: num_workers, cpus_per_worker, gpus_per_worker",
            param=PARAM,
        )
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise InvalidRequest(
            f"unknown resource {unknown[0]!r} (resources: {', '.join(DEFAULTS)})",
            param=f"{PARAM}.{unknown[0]}",
        )
    workers = raw.get("num_workers", DEFAULTS["num_workers"])
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InvalidRequest(
            f"resources.num_workers must be a whole number from 1 to {MAX_WORKERS}, "
            f"got {workers!r}",
            param=f"{PARAM}.num_workers",
        )
    cpus = _number(raw, "cpus_per_worker", low=0.0, high=MAX_CPUS_PER_WORKER, zero=False)
    gpus = _number(raw, "gpus_per_worker", low=0.0, high=MAX_GPUS_PER_WORKER, zero=True)
    if ray_address is None:
        raise InvalidRequest(
            "resources run a job on Ray Train workers, and this server has no Ray cluster "
            "(set OPENMAAS_RAY_ADDRESS); leave resources out to train on this machine",
            param=PARAM,
            code="no_ray_cluster",
        )
    if search:
        if base_model is not None:
            raise InvalidRequest(
                "a search over a base model runs its trials on the job's worker (the base "
                "model's files are not shipped to Ray): leave out resources",
                param=PARAM,
            )
        if workers != 1:
            raise InvalidRequest(
                "a search job runs each trial on one Ray Tune worker: resources.num_workers "
                "must be 1 (cpus_per_worker and gpus_per_worker size each trial)",
                param=f"{PARAM}.num_workers",
            )
    elif not recipe.data_parallel:
        raise InvalidRequest(
            f"recipe {recipe.name!r} does not train on several workers; resources work with "
            "the networks trained from scratch in the shared loop (textcnn, bilstm, gru, "
            "transformer_encoder)",
            param=PARAM,
            code="recipe_not_distributed",
        )
    if cross_validation is not None:
        raise InvalidRequest(
            "a cross-validated job trains its folds on this machine: leave out resources "
            "or cross_validation",
            param=PARAM,
        )
    embeddings = hyperparameters.get("embeddings")
    if isinstance(embeddings, str) and embeddings not in ("auto", ""):
        raise InvalidRequest(
            "pretrained embeddings are not shipped to Ray workers (yet): leave out resources "
            "or hyperparameters.embeddings",
            param="hyperparameters.embeddings",
        )
    return {"num_workers": workers, "cpus_per_worker": cpus, "gpus_per_worker": gpus}


def _number(raw: Mapping[str, Any], name: str, *, low: float, high: float, zero: bool) -> float:
    value = raw.get(name, DEFAULTS[name])
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and (low <= value <= high) and (zero or value > low):
        return float(value)
    floor = f"from {low:g}" if zero else f"above {low:g}"
    raise InvalidRequest(
        f"resources.{name} must be a number {floor} up to {high:g}, got {value!r}",
        param=f"{PARAM}.{name}",
    )
