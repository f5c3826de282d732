"""The contract between the job system and a recipe.

A recipe trains one kind of model. The worker hands it a `TrainingContext` (the dataset's
splits as plain examples, hyperparameters, where to write, how to report, whether to stop,
and a checkpoint to resume from) and gets back a `TrainingResult` describing a servable model
directory, which the worker registers as a new version.

Examples, by task:
- text-classification: {"text": str, "label": str}
- token-classification: {"tokens": [str, ...], "tags": [str, ...]} (BIO tags)
- text-generation: {"text": str} (chat files arrive as their rendered text)
- embedding (word2vec): {"text": str}

Example::

    class TextCNN(Recipe):
        name = "textcnn"
        tasks = ("text-classification",)

        def train(self, ctx: TrainingContext) -> TrainingResult:
            ...
            ctx.report_metrics(step=100, epoch=1, metrics={"loss": 0.41})
            ctx.save_checkpoint(state_dir, step=100, epoch=1, metrics={"loss": 0.41})
            ...
            return TrainingResult(task="text-classification", runtime="openmaas-nn", ...)
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

Example = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A saved state (a directory the recipe wrote) to resume from."""

    directory: Path
    step: int
    epoch: int
    metrics: Mapping[str, float]


@dataclass(slots=True)
class TrainingContext:
    job_id: str
    task: str
    train: Sequence[Example]
    validation: Sequence[Example]  # may be empty: the recipe then splits nothing off itself
    test: Sequence[Example]  # metrics registered with the version come from this split
    hyperparameters: Mapping[str, Any]  # already validated against the recipe's defaults
    seed: int
    output_dir: Path  # write the servable model here (empty at start)
    work_dir: Path  # scratch space, kept across resumes of the same job
    device: str = "cpu"
    base_model: Path | None = None  # files of the registered base model, when the recipe has one
    base_model_params: Mapping[str, Any] = field(default_factory=dict)
    # The base model as registered: a pinned reference ("name:version"), its task and runtime.
    base_model_reference: str | None = None
    base_model_task: str | None = None
    base_model_runtime: str | None = None
    resume_from: Checkpoint | None = None
    # The registered word vectors the `embeddings` hyperparameter names (files, name:version).
    embeddings: Path | None = None
    embeddings_reference: str | None = None
    # Set by the worker: events go to the job's event log, checkpoints to its store.
    on_message: Callable[[str, str], None] = lambda level, message: None
    on_metrics: Callable[[int, int, Mapping[str, float]], None] = lambda step, epoch, m: None
    on_checkpoint: Callable[[Path, int, int, Mapping[str, float]], None] = (
        lambda directory, step, epoch, metrics: None
    )
    should_stop: Callable[[], bool] = lambda: False  # cancel requested: stop soon, cleanly
    on_plan: Callable[[int], None] = lambda total_steps: None
    # A data-parallel run (Ray Train, `scaleout.train_worker`): this worker's rank among
    # `world_size`, each training batch split between them, and how the network is wrapped
    # for it (DistributedDataParallel); every rank reports, rank 0's reports are kept.
    rank: int = 0
    world_size: int = 1
    wrap_network: Callable[[Any], Any] = lambda network: network

    def message(self, text: str, level: str = "info") -> None:
        self.on_message(level, text)

    def plan_steps(self, total_steps: int) -> None:
        """Say how many steps the whole run takes, once the recipe knows (its progress total
        and ETA). Without it the job guesses n_epochs x ceil(examples / batch_size), wrong
        for recipes whose steps are not batches of examples (blocks of tokens, epochs)."""
        self.on_plan(total_steps)

    def report_metrics(self, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        self.on_metrics(step, epoch, metrics)

    def save_checkpoint(
        self, directory: Path, step: int, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        """Hand a finished checkpoint directory to the job (it is copied; reuse the path)."""
        self.on_checkpoint(directory, step, epoch, metrics)


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What was written to `output_dir`, as the registry needs it."""

    task: str
    runtime: str
    metrics: Mapping[str, float]  # on the test split: accuracy, macro_f1, ...
    params: Mapping[str, Any] = field(default_factory=dict)  # recorded with the version
    trained_tokens: int | None = None
    report: Mapping[str, Any] = field(default_factory=dict)  # per-class report, confusion


class TrainingStopped(Exception):
    """Raised by a recipe that stopped because `should_stop()` said so (a cancel)."""


# An "auto" batch size of a network trained from scratch leaves an epoch about this many steps.
STEPS_PER_EPOCH = 100
SMALLEST_AUTO_BATCH = 8


def batch_size_for(n_examples: int, default: int) -> int:
    """The recipe's default batch size, or a smaller one for a small dataset: the power of two
    nearest `n_examples / STEPS_PER_EPOCH`, at least `SMALLEST_AUTO_BATCH`. A network that
    starts from random weights needs steps more than it needs big batches: the BiLSTM on
    1,529 BBC articles in batches of 64 took 72 steps in 3 epochs and scored 0.63; in batches
    of 16, 0.97."""
    wanted = max(1.0, n_examples / STEPS_PER_EPOCH)
    nearest = 1 << round(math.log2(wanted))
    return max(min(default, SMALLEST_AUTO_BATCH), min(default, nearest))


class Recipe(abc.ABC):
    name: str
    tasks: tuple[str, ...]
    needs_base_model: bool = False
    # True: a base model is optional (resnet: from scratch, or fine-tuned from one).
    accepts_base_model: bool = False
    description: str = ""
    # True: an "auto" batch_size is `batch_size_for(n_examples, default)`, not the default.
    batch_size_scales_with_data: bool = False
    # The hyperparameter search a job gets when it names no space (`training.search_space`
    # reads it): {name: {"type": "float" | "int" | "categorical", ...}}; empty: none.
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # True: `train` splits its batches across `ctx.world_size` data-parallel workers (the
    # word-level networks of the shared loop); a job may then ask for Ray Train `resources`.
    data_parallel: ClassVar[bool] = False

    @abc.abstractmethod
    def defaults(self) -> dict[str, Any]:
        """Every hyperparameter with its default value."""

    def resolve(self, given: Mapping[str, Any], n_examples: int) -> dict[str, Any]:
        """Defaults overridden by `given`; `"auto"` keeps the default (a batch size may scale
        with `n_examples`, the training split's size). Unknown names are a ValueError naming
        them and the known ones."""
        defaults = self.defaults()
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            known = ", ".join(sorted(defaults))
            raise ValueError(
                f"unknown hyperparameters for recipe {self.name!r}: {', '.join(unknown)} "
                f"(known: {known})"
            )
        hp = {k: (defaults[k] if given.get(k, "auto") == "auto" else given[k]) for k in defaults}
        if self.batch_size_scales_with_data and given.get("batch_size", "auto") == "auto":
            hp["batch_size"] = batch_size_for(n_examples, int(defaults["batch_size"]))
        return hp

    @abc.abstractmethod
    def train(self, ctx: TrainingContext) -> TrainingResult: ...
