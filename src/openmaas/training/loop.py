"""The training loop every classification recipe shares.

A recipe hands over a network, a `forward` that turns a batch of its items (texts, or
precomputed features) into logits, the labeled splits and the `LoopSettings`; the loop runs
the epochs: shuffled (or class-balanced, oversampled) batches, optional text augmentation,
cross-entropy (optionally class-weighted), AdamW, SGD with momentum or Adadelta (then the
network's own weight constraints, TextCNN's max-norm), warmup then linear or cosine decay,
optionally batches of near-equal lengths (`group_by_length`, see `training.batch_order`) and
bf16 autocast (`precision`, see `training.precision`), gradient clipping, evaluation on the
validation split after each epoch, early stopping on a chosen metric with patience,
TensorBoard scalars and progress reports through the context. At the end the best validation
weights are back in the network. A subclass trains another objective by overriding
`batch_loss` and `validate` (the `gpt` recipe's next-token loss, in `recipes/causal_lm.py`).

Checkpoints (`ctx.work_dir/checkpoint`, handed to `ctx.save_checkpoint`) hold the weights,
the optimizer's state, the torch RNG and the position in safetensors + JSON, no pickle. They
are written every `checkpoint_every_steps`, at each epoch's end and when `ctx.should_stop()`
(polled before every step) asks to stop, which then raises `TrainingStopped`. A run resumed
from one ends with the same weights as an uninterrupted run: batch order and augmentation
draw from generators seeded by (seed, epoch) and (seed, step), dropout from the restored RNG.

Example::

    outcome = train_classifier(
        ctx,
        network=network,
        forward=lambda texts: network(*pad_batch(token_ids(tokenizer, texts, max_length=64))),
        train=LabeledItems(texts, label_ids),
        validation=LabeledItems(val_texts, val_label_ids),
        labels=("negative", "positive"),
        settings=LoopSettings.from_hyperparameters(hp),
        augment=augment_text,
    )
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from openmaas.training.batch_order import length_grouped
from openmaas.training.hyperparameters import LoopSettings
from openmaas.training.metrics import ClassificationMetrics, classification_metrics
from openmaas.training.optimizers import (
    build_optimizer,
    contiguous_tensors,
    join_optimizer_state,
    split_optimizer_state,
)
from openmaas.training.precision import Precision, autocast, resolve_precision, supports_bf16
from openmaas.training.recipe import TrainingContext, TrainingStopped

T = TypeVar("T")

CHECKPOINT_DIRECTORY = "checkpoint"  # under ctx.work_dir
TENSORBOARD_DIRECTORY = "tensorboard"  # under ctx.work_dir, beside the checkpoints
CHECKPOINT_FORMAT = 1
LOG_EVERY_STEPS = 10  # progress reports and TensorBoard points of the training loss
EVAL_BATCH_SIZE = 64
# Text augmentation: each word is dropped with this probability, then each neighbour pair
# swapped with this one (Wei & Zou 2019's random deletion and swap, at their mild 0.1).
AUGMENT_DROP_RATE = 0.1
AUGMENT_SWAP_RATE = 0.1


@dataclass(frozen=True, slots=True)
class LabeledItems(Generic[T]):
    """Items (texts, feature rows) with their label indices."""

    items: Sequence[T]
    labels: Sequence[int]

    def __post_init__(self) -> None:
        if len(self.items) != len(self.labels):
            raise ValueError(f"{len(self.items)} items but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.items)


@dataclass(slots=True)
class Progress:
    """Where a run stands; saved as JSON in every checkpoint."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    best_value: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    trained_examples: int = 0
    trained_tokens: int = 0


@dataclass(frozen=True, slots=True)
class LoopOutcome:
    steps: int
    epochs: int
    best_epoch: int | None  # None without a validation split
    best_value: float | None  # of settings.early_stopping_metric
    stopped_early: bool
    trained_examples: int
    trained_tokens: int
    precision: Precision = "fp32"  # what the training steps computed in


@dataclass(frozen=True, slots=True)
class Evaluation:
    metrics: ClassificationMetrics
    loss: float  # mean cross-entropy, unweighted
    predictions: list[int]

    def summary(self) -> dict[str, float]:
        return {**self.metrics.summary(), "loss": self.loss}


@runtime_checkable
class Constrained(Protocol):
    """A network with a constraint on its weights, applied after every optimizer step
    (TextCNN's max-norm on its output layer)."""

    def apply_constraints(self) -> None: ...


class ScalarWriter(Protocol):
    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None: ...

    def close(self) -> None: ...


class _NoScalars:
    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        return None

    def close(self) -> None:
        return None


def train_classifier(
    ctx: TrainingContext,
    *,
    network: nn.Module,
    forward: Callable[[Sequence[T]], torch.Tensor],
    train: LabeledItems[T],
    validation: LabeledItems[T],
    labels: Sequence[str],
    settings: LoopSettings,
    augment: Callable[[T, random.Random], T] | None = None,
    item_tokens: Sequence[int] | None = None,
    checkpoint_files: Sequence[Path] = (),
) -> LoopOutcome:
    """Train `network` (its parameters that require grad) and leave the best weights in it.

    `item_tokens` (tokens per training item) feeds the trained-token count; files named in
    `checkpoint_files` (a vocabulary) are copied into every checkpoint.
    """
    return ClassifierTrainer(
        ctx,
        network=network,
        forward=forward,
        train=train,
        validation=validation,
        labels=labels,
        settings=settings,
        augment=augment,
        item_tokens=item_tokens,
        checkpoint_files=checkpoint_files,
    ).run()


class ClassifierTrainer(Generic[T]):
    """One run of `train_classifier`; see the module docstring."""

    def __init__(
        self,
        ctx: TrainingContext,
        *,
        network: nn.Module,
        forward: Callable[[Sequence[T]], torch.Tensor],
        train: LabeledItems[T],
        validation: LabeledItems[T],
        labels: Sequence[str],
        settings: LoopSettings,
        augment: Callable[[T, random.Random], T] | None,
        item_tokens: Sequence[int] | None,
        checkpoint_files: Sequence[Path],
    ) -> None:
        if not len(train):
            raise ValueError("the training split is empty")
        self.ctx = ctx
        self.network = network
        self.forward = forward
        self.train = train
        self.validation = validation
        self.labels = tuple(labels)
        self.settings = settings
        self.augment = augment if settings.augment else None
        self.item_tokens = item_tokens
        self.checkpoint_files = tuple(checkpoint_files)
        self.parameters = [p for p in network.parameters() if p.requires_grad]
        self.device_type = self.parameters[0].device.type if self.parameters else "cpu"
        self.precision = resolve_precision(
            settings.precision, bf16_supported=supports_bf16(self.device_type)
        )
        # Batches of near-equal token counts, where the recipe counted its items' tokens.
        self.grouped = settings.group_by_length and item_tokens is not None
        self.optimizer = build_optimizer(network, settings)
        self.loss_weights = (
            class_weights(train.labels, len(self.labels))
            if settings.class_weighting == "weighted"
            else None
        )
        self.steps_per_epoch = math.ceil(len(self.epoch_order(0)) / settings.batch_size)
        self.total_steps = self.steps_per_epoch * settings.n_epochs
        self.warmup_steps = round(settings.warmup_ratio * self.total_steps)
        self.progress = Progress()
        self.best_weights: dict[str, torch.Tensor] | None = None
        # True while the network still holds the best weights (no step since they were
        # kept): a checkpoint then stores them once, not twice.
        self.best_is_current = False
        self.writer: ScalarWriter = _NoScalars()
        self._logged_loss_sum = 0.0
        self._logged_loss_count = 0

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> LoopOutcome:
        self.ctx.plan_steps(self.total_steps)
        if self.settings.precision != "fp32" or self.settings.group_by_length:
            self.ctx.message(self.describe_speedups())
        resumed = self.ctx.resume_from is not None
        if self.ctx.resume_from is not None:
            self.restore(self.ctx.resume_from.directory)
            self.ctx.message(
                f"resuming at step {self.progress.step} (epoch {self.progress.epoch + 1}, "
                f"batch {self.progress.batch})"
            )
        self.writer = open_writer(
            self.ctx, self.ctx.work_dir / TENSORBOARD_DIRECTORY, self.progress.step, resumed
        )
        try:
            while self.progress.epoch < self.settings.n_epochs and not self.progress.stopped_early:
                self.run_epoch()
                self.end_epoch()
        finally:
            self.writer.close()
        if self.best_weights is not None:
            self.network.load_state_dict(self.best_weights)
        p = self.progress
        has_best = self.best_weights is not None
        return LoopOutcome(
            steps=p.step,
            epochs=p.epoch,
            best_epoch=p.best_epoch if has_best else None,
            best_value=p.best_value if has_best else None,
            stopped_early=p.stopped_early,
            trained_examples=p.trained_examples,
            trained_tokens=p.trained_tokens,
            precision=self.precision,
        )

    def describe_speedups(self) -> str:
        """What the job's events say about its batch order and number format."""
        if self.precision == "bf16":
            why = "asked for" if self.settings.precision == "bf16" else "the device has it"
            number_format = f"bf16 autocast ({why}; weights, optimizer and loss in fp32)"
        elif self.settings.precision == "bf16-if-supported":
            number_format = f"fp32 (this {self.device_type} has no bf16 arithmetic)"
        else:
            number_format = "fp32"
        order = "grouped by length" if self.grouped else "shuffled"
        return f"precision: {number_format}; batches {order}"

    def epoch_order(self, epoch: int) -> list[int]:
        """Training item indices for `epoch`, a function of (seed, epoch) only. Oversampling
        draws minority-class items again until every class has as many as the largest;
        `group_by_length` then arranges them into batches of near-equal token counts."""
        rng = np.random.default_rng([self.ctx.seed, epoch])
        indices = np.arange(len(self.train))
        if self.settings.class_weighting == "oversample":
            labels = np.asarray(self.train.labels)
            counts = np.bincount(labels)
            extra = [
                rng.choice(np.flatnonzero(labels == label), size=counts.max() - count)
                for label, count in enumerate(counts)
                if 0 < count < counts.max()
            ]
            indices = np.concatenate([indices, *extra])
        order: list[int] = rng.permutation(indices).tolist()
        if self.grouped:
            assert self.item_tokens is not None
            order = length_grouped(order, self.item_tokens, self.settings.batch_size, rng)
        return order

    def run_epoch(self) -> None:
        order = self.epoch_order(self.progress.epoch)
        size = self.settings.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        for index in range(self.progress.batch, len(batches)):
            if self.ctx.should_stop():
                self.save_checkpoint(self.progress.epoch + 1)
                self.ctx.message(f"stopped at step {self.progress.step}; checkpoint saved")
                raise TrainingStopped(f"stopped at step {self.progress.step}")
            loss = self.train_step(batches[index])
            self.progress.batch = index + 1
            last_of_epoch = index + 1 == len(batches)
            if self.progress.step % self.settings.checkpoint_every_steps == 0 and not (
                last_of_epoch  # the epoch's end saves one anyway
            ):
                self.save_checkpoint(self.progress.epoch + 1)
            self.log_step(loss)

    def train_step(self, batch: Sequence[int]) -> float:
        p = self.progress
        items = [self.train.items[i] for i in batch]
        if self.augment is not None:
            # Seeded by (seed, step): a resumed run augments exactly as the first did.
            rng = random.Random(f"{self.ctx.seed}:{p.step}")  # noqa: S311 - not for secrets
            items = [self.augment(item, rng) for item in items]
        learning_rate = self.learning_rate_at(p.step)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.network.train()
        # Data-parallel (ctx.world_size ranks): this rank's part of the batch; the
        # gradients DistributedDataParallel averages are then the whole batch's.
        part = data_parallel_part(len(batch), self.ctx.rank, self.ctx.world_size)
        loss = self.batch_loss(items[part], batch[part])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if self.settings.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.parameters, self.settings.max_grad_norm)
        self.optimizer.step()
        if isinstance(self.network, Constrained):
            with torch.no_grad():
                self.network.apply_constraints()
        self.best_is_current = False
        value = float(loss.detach())
        p.step += 1
        p.epoch_loss_sum += value
        p.epoch_loss_count += 1
        p.trained_examples += len(batch)
        if self.item_tokens is not None:
            p.trained_tokens += sum(self.item_tokens[i] for i in batch)
        return value

    def batch_loss(self, items: Sequence[T], batch: Sequence[int]) -> torch.Tensor:
        """The loss of one training batch: `items` are the (augmented) training items at
        indices `batch`. A loop for another objective (next-token prediction) overrides it.
        The forward pass runs under the run's autocast; the loss is computed in fp32."""
        with autocast(self.device_type, self.precision):
            logits = self.forward(items)
        logits = logits.float()
        targets = torch.tensor([self.train.labels[i] for i in batch], device=logits.device)
        weights = None if self.loss_weights is None else self.loss_weights.to(logits.device)
        return F.cross_entropy(logits, targets, weight=weights)

    def validate(self) -> dict[str, float]:
        """Metrics on the validation split, `loss` among them (raises TrainingStopped when
        `ctx.should_stop()` says so); overridden with `batch_loss`."""
        evaluation = evaluate(
            self.network,
            self.forward,
            self.validation,
            self.labels,
            should_stop=self.ctx.should_stop,
        )
        return evaluation.summary()

    def learning_rate_at(self, step: int) -> float:
        """Linear warmup from 0 over `warmup_steps`, then hold, or decay to 0 linearly or
        along a half cosine by the last step."""
        peak = self.settings.learning_rate
        if step < self.warmup_steps:
            return peak * (step + 1) / self.warmup_steps
        if self.settings.schedule == "constant":
            return peak
        done = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.settings.schedule == "cosine":
            return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
        return peak * max(0.0, 1.0 - done)

    def log_step(self, loss: float) -> None:
        self._logged_loss_sum += loss
        self._logged_loss_count += 1
        step = self.progress.step
        if step % LOG_EVERY_STEPS and step != self.total_steps:
            return
        mean_loss = self._logged_loss_sum / self._logged_loss_count
        learning_rate = float(self.optimizer.param_groups[0]["lr"])
        self._logged_loss_sum, self._logged_loss_count = 0.0, 0
        self.writer.add_scalar("train/loss", mean_loss, step)
        self.writer.add_scalar("train/learning_rate", learning_rate, step)
        self.ctx.report_metrics(
            step, self.progress.epoch + 1, {"loss": mean_loss, "learning_rate": learning_rate}
        )

    def end_epoch(self) -> None:
        p = self.progress
        summary = None
        if len(self.validation):
            try:
                summary = self.validate()
            except TrainingStopped:
                # Saved before the epoch counts as ended: a resumed run evaluates again.
                self.save_checkpoint(p.epoch + 1)
                raise
        p.epoch += 1
        p.batch = 0
        metrics = {"train_loss": p.epoch_loss_sum / max(1, p.epoch_loss_count)}
        p.epoch_loss_sum, p.epoch_loss_count = 0.0, 0
        if summary is not None:
            metrics.update({f"val_{name}": value for name, value in summary.items()})
            self.track_best(summary[self.settings.early_stopping_metric])
        for name, value in metrics.items():
            self.writer.add_scalar(f"epoch/{name}", value, p.step)
        self.ctx.report_metrics(p.step, p.epoch, metrics)
        shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        self.ctx.message(f"epoch {p.epoch}/{self.settings.n_epochs}: {shown}")
        if p.stopped_early:
            self.ctx.message(
                f"early stopping: no better validation {self.settings.early_stopping_metric} "
                f"for {p.epochs_without_improvement} epochs; keeping epoch {p.best_epoch}"
            )
        self.save_checkpoint(p.epoch, metrics)

    def track_best(self, value: float) -> None:
        p = self.progress
        lower_is_better = self.settings.early_stopping_metric == "loss"
        delta = self.settings.early_stopping_min_delta
        improved = p.best_value is None or (
            value < p.best_value - delta if lower_is_better else value > p.best_value + delta
        )
        if improved:
            p.best_value, p.best_epoch, p.epochs_without_improvement = value, p.epoch, 0
            self.best_weights = {
                name: tensor.detach().clone() for name, tensor in self.network.state_dict().items()
            }
            self.best_is_current = True
        else:
            p.epochs_without_improvement += 1
            patience = self.settings.patience
            p.stopped_early = 0 < patience <= p.epochs_without_improvement

    # -- checkpoints --------------------------------------------------------------------------

    def save_checkpoint(self, epoch: int, metrics: Mapping[str, float] | None = None) -> None:
        directory = self.ctx.work_dir / CHECKPOINT_DIRECTORY
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        save_model(self.network, str(directory / "model.safetensors"))
        if self.best_weights is not None and not self.best_is_current:
            save_file(contiguous_tensors(self.best_weights), str(directory / "best.safetensors"))
        tensors, optimizer_rest = split_optimizer_state(self.optimizer.state_dict())
        save_file(tensors, str(directory / "optimizer.safetensors"))
        save_file({"torch": torch.get_rng_state()}, str(directory / "rng.safetensors"))
        state = {
            "format": CHECKPOINT_FORMAT,
            "progress": asdict(self.progress),
            "best_is_current": self.best_weights is not None and self.best_is_current,
            "optimizer": optimizer_rest,
        }
        (directory / "state.json").write_text(json.dumps(state), encoding="utf-8")
        for path in self.checkpoint_files:
            shutil.copy(path, directory / path.name)
        self.ctx.save_checkpoint(directory, self.progress.step, epoch, dict(metrics or {}))

    def restore(self, directory: Path) -> None:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not supported")
        load_model(self.network, str(directory / "model.safetensors"))
        tensors = load_file(str(directory / "optimizer.safetensors"))
        self.optimizer.load_state_dict(join_optimizer_state(tensors, state["optimizer"]))
        torch.set_rng_state(load_file(str(directory / "rng.safetensors"))["torch"])
        if state["best_is_current"]:
            self.best_is_current = True
            self.best_weights = {
                name: tensor.detach().clone() for name, tensor in self.network.state_dict().items()
            }
        elif (directory / "best.safetensors").is_file():
            self.best_weights = load_file(str(directory / "best.safetensors"))
        self.progress = Progress(**state["progress"])


# -- the pieces -------------------------------------------------------------------------------


def data_parallel_part(n_items: int, rank: int, world_size: int) -> slice:
    """Rank `rank`'s contiguous, near-equal part of a batch of `n_items`; the whole batch for
    every rank when it holds fewer items than ranks (the averaged gradient is the batch's)."""
    if world_size <= 1 or n_items < world_size:
        return slice(0, n_items)
    size, extra = divmod(n_items, world_size)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (1 if rank < extra else 0))


def class_weights(labels: Sequence[int], n_labels: int) -> torch.Tensor:
    """Balanced loss weights, n / (classes * count), as scikit-learn's "balanced"; 0 for a
    class with no training example."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_labels)
    present = int((counts > 0).sum())
    weights = np.zeros(n_labels, dtype=np.float32)
    weights[counts > 0] = len(labels) / (present * counts[counts > 0])
    return torch.from_numpy(weights)


def augment_text(text: str, rng: random.Random) -> str:
    """Random word deletion, then random neighbour swaps; at least one word survives."""
    words = text.split()
    if len(words) < 2:
        return text
    kept = [word for word in words if rng.random() >= AUGMENT_DROP_RATE] or [rng.choice(words)]
    for i in range(len(kept) - 1):
        if rng.random() < AUGMENT_SWAP_RATE:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
    return " ".join(kept)


def evaluate(
    network: nn.Module,
    forward: Callable[[Sequence[T]], torch.Tensor],
    data: LabeledItems[T],
    labels: Sequence[str],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    should_stop: Callable[[], bool] = lambda: False,
    lengths: Sequence[int] | None = None,
) -> Evaluation:
    """Predictions, metrics and mean loss over `data`; `should_stop` is polled before each
    batch (raising `TrainingStopped`), since a large split takes a while. Given the items'
    `lengths` (tokens), batches take items of similar length, longest first, so a padded
    batch wastes little (as the serving runtimes batch); predictions keep `data`'s order."""
    network.eval()
    total_loss = 0.0
    order = list(range(len(data)))
    if lengths is not None:
        order.sort(key=lambda i: -lengths[i])
    predictions = [0] * len(data)
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            if should_stop():
                raise TrainingStopped("stopped while evaluating")
            batch = order[start : start + batch_size]
            if lengths is None:  # items such as feature rows may be one tensor: slice it
                items, targets_of = (
                    data.items[start : start + batch_size],
                    data.labels[start : start + batch_size],
                )
            else:
                items, targets_of = [data.items[i] for i in batch], [data.labels[i] for i in batch]
            logits = forward(items)
            targets = torch.tensor(targets_of, device=logits.device)
            total_loss += float(F.cross_entropy(logits, targets, reduction="sum"))
            for i, predicted in zip(batch, logits.argmax(dim=1).tolist(), strict=True):
                predictions[i] = int(predicted)
    metrics = classification_metrics(list(data.labels), predictions, labels)
    return Evaluation(metrics=metrics, loss=total_loss / max(1, len(data)), predictions=predictions)


def open_writer(ctx: TrainingContext, directory: Path, step: int, resumed: bool) -> ScalarWriter:
    """TensorBoard event files in `directory`; a resumed run drops the points its killed
    predecessor wrote after the checkpoint (`purge_step`)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        ctx.message("tensorboard is not installed: no event files are written", "warning")
        return _NoScalars()
    writer: ScalarWriter = SummaryWriter(str(directory), purge_step=step if resumed else None)
    return writer
