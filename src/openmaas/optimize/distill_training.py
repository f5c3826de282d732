"""Distillation's objective and loop: a student trained on a teacher's softened class
probabilities (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network").

The teacher's probabilities come from serving, not its logits, so they are softened in
probability space: p^(1/T), renormalised, which is softmax(z / T) for a softmax teacher with
logits z. The loss is KL(teacher_T || student_T) x T² (the T² keeps the gradients' scale as T
changes, as Hinton et al. do), mixed with cross-entropy on the file's labels when alpha < 1.

The loop is the recipes' (`training.loop.ClassifierTrainer`: seeded batch order, AdamW,
warmup and decay, clipping, early stopping with patience, best weights kept), with this
loss per batch and agreement with the teacher on the held-out texts as the validation
metric.

Example::

    targets = soften(torch.tensor([[0.8, 0.2]]), temperature=2.0)  # [[2/3, 1/3]]
    loss = distillation_loss(student_logits, targets, temperature=2.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openmaas.training.hyperparameters import LoopSettings
from openmaas.training.loop import ClassifierTrainer, LabeledItems
from openmaas.training.recipe import TrainingContext, TrainingStopped

# Teacher probabilities below this are taken as this before the log: a float32 softmax
# underflows to 0 for logits ~100 apart, and log(0) would make the softened target NaN.
SMALLEST_PROBABILITY = 1e-12
VALIDATION_BATCH = 64
AGREEMENT = "agreement"  # the validation metric early stopping follows


def soften(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """Rows of probabilities at temperature `temperature`: p^(1/T), renormalised."""
    log_p = probabilities.clamp_min(SMALLEST_PROBABILITY).log()
    return torch.softmax(log_p / temperature, dim=-1)


def distillation_loss(
    student_logits: torch.Tensor, soft_targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(soft_targets || softmax(student_logits / T)) x T², averaged over the batch;
    `soft_targets` are the teacher's probabilities already at T (`soften`)."""
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    kl = F.kl_div(log_student, soft_targets, reduction="batchmean")
    return kl * temperature**2


def combined_loss(
    student_logits: torch.Tensor,
    soft_targets: torch.Tensor,
    hard_labels: torch.Tensor | None,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha x distillation loss + (1 - alpha) x cross-entropy on the hard labels."""
    loss = distillation_loss(student_logits, soft_targets, temperature)
    if alpha >= 1.0 or hard_labels is None:
        return loss
    hard = F.cross_entropy(student_logits, hard_labels)
    return alpha * loss + (1.0 - alpha) * hard


@dataclass(frozen=True, slots=True)
class SoftTargets:
    """The teacher's probabilities for one split's texts (rows in the teacher's label order),
    and the file's labels as indices into it where the loss uses them."""

    texts: Sequence[str]
    probabilities: torch.Tensor  # (texts, labels), at temperature 1
    hard_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != self.probabilities.shape[0]:
            raise ValueError(f"{len(self.texts)} texts but {self.probabilities.shape[0]} rows")

    def __len__(self) -> int:
        return len(self.texts)

    def teacher_labels(self) -> list[int]:
        return [int(i) for i in self.probabilities.argmax(dim=1).tolist()]


class DistillationTrainer(ClassifierTrainer[str]):
    """`ClassifierTrainer` with the distillation loss and agreement with the teacher as the
    validation metric (`LoopSettings.early_stopping_metric == "agreement"`)."""

    def __init__(
        self,
        ctx: TrainingContext,
        *,
        network: nn.Module,
        forward: Callable[[Sequence[str]], torch.Tensor],
        train: SoftTargets,
        held_out: SoftTargets,
        labels: Sequence[str],
        settings: LoopSettings,
        temperature: float,
        alpha: float,
        item_tokens: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            ctx,
            network=network,
            forward=forward,
            train=LabeledItems(list(train.texts), train.teacher_labels()),
            validation=LabeledItems(list(held_out.texts), held_out.teacher_labels()),
            labels=labels,
            settings=settings,
            augment=None,
            item_tokens=item_tokens,
            checkpoint_files=(),
        )
        self.temperature = temperature
        self.alpha = alpha
        self.soft_train = soften(train.probabilities, temperature)
        self.hard_train = train.hard_labels
        self.soft_held_out = soften(held_out.probabilities, temperature)

    def batch_loss(self, items: Sequence[str], batch: Sequence[int]) -> torch.Tensor:
        logits = self.forward(items)
        index = torch.tensor(list(batch), dtype=torch.long)
        hard = None if self.hard_train is None else self.hard_train[index].to(logits.device)
        return combined_loss(
            logits,
            self.soft_train[index].to(logits.device),
            hard,
            temperature=self.temperature,
            alpha=self.alpha,
        )

    def validate(self) -> dict[str, float]:
        agreement, loss = held_out_agreement(
            self.network,
            self.forward,
            self.validation.items,
            self.soft_held_out,
            self.temperature,
            should_stop=self.ctx.should_stop,
        )
        return {AGREEMENT: agreement, "loss": loss}


def held_out_agreement(
    network: nn.Module,
    forward: Callable[[Sequence[str]], torch.Tensor],
    texts: Sequence[str],
    soft_targets: torch.Tensor,
    temperature: float,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[float, float]:
    """(share of `texts` whose top label is the teacher's, mean distillation loss)."""
    network.eval()
    agreed, loss_sum = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(texts), VALIDATION_BATCH):
            if should_stop():
                raise TrainingStopped("stopped while measuring agreement")
            logits = forward(texts[start : start + VALIDATION_BATCH])
            targets = soft_targets[start : start + VALIDATION_BATCH].to(logits.device)
            agreed += int((logits.argmax(dim=1) == targets.argmax(dim=1)).sum())
            loss = distillation_loss(logits, targets, temperature)
            loss_sum += float(loss) * len(targets)
    count = max(1, len(texts))
    mean_loss = loss_sum / count
    return agreed / count, mean_loss if math.isfinite(mean_loss) else float("inf")
