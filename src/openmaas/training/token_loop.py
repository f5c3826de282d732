"""The shared loop (`training.loop`) for token classification: a tag per word, the loss taken
at every tagged input position, entity F1 (`training.ner_metrics`) on the validation split.

A model's input positions are not the data's words: a transformer splits words into subwords
and adds [CLS] and [SEP]; the word-level tokenizer cuts "U.S." into four pieces. `align_tags`
maps a sentence's word tags onto its input positions once, up front. The first position of
each word takes the word's tag; the word's other positions are left out of the loss
(`IGNORED`, the usual Hugging Face recipe) or, given `continuation`, take the tag that
continues the word's entity (I-X after a B-X word) for a model that is served piece by piece.
Predictions are read back at each word's first position, so the metrics count the words of
the data however the model splits them, as CoNLL scores do.

Schedule, clipping, checkpoints, resume, cancel and early stopping are the shared loop's:
`TaggerTrainer` only says what a batch's loss is and what a validation pass reports. Sentences
carry their aligned tags (`TaggedInput`), so the loop's per-item label slot holds 0.

Example::

    encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=128)
    train = [TaggedInput(tuple(encoded["input_ids"][i]), align_tags(encoded.word_ids(i), tags[i]))
             for i in range(len(words))]
    outcome = train_tagger(ctx, network=network, forward=forward, train=train, validation=[],
                           tags=("O", "B-PER", "I-PER"), settings=settings)
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from openmaas.training.hyperparameters import LoopSettings
from openmaas.training.loop import (
    EVAL_BATCH_SIZE,
    ClassifierTrainer,
    LabeledItems,
    LoopOutcome,
    class_weights,
)
from openmaas.training.ner_metrics import OUTSIDE, EntityMetrics, entity_metrics
from openmaas.training.recipe import TrainingContext, TrainingStopped

X = TypeVar("X")  # a sentence as its model reads it: token ids, pieces with their casing

IGNORED = -100  # a position the loss leaves out (F.cross_entropy's default ignore_index)


@dataclass(frozen=True, slots=True)
class AlignedTags:
    """A sentence's tags (indices into the tag set) as one encoding of it sees them."""

    targets: tuple[int, ...]  # per input position: the tag to learn there, or IGNORED
    word_starts: tuple[int, ...]  # per word: its first input position, -1 when cut off
    tags: tuple[int, ...]  # per word: the true tag


def align_tags(
    word_ids: Sequence[int | None],
    tags: Sequence[int],
    *,
    continuation: Sequence[int] | None = None,
) -> AlignedTags:
    """`word_ids`: per input position, the index of the word it belongs to (None for special
    tokens), as a fast tokenizer's `word_ids()` gives them. `continuation`: per tag, the tag of
    a word's later positions (B-X -> I-X); without it they are IGNORED."""
    targets: list[int] = []
    starts = [-1] * len(tags)
    previous: int | None = None
    for position, word in enumerate(word_ids):
        if word is None:
            targets.append(IGNORED)
        elif word != previous:
            starts[word] = position
            targets.append(tags[word])
        else:
            targets.append(IGNORED if continuation is None else continuation[tags[word]])
        previous = word
    return AlignedTags(tuple(targets), tuple(starts), tuple(tags))


@dataclass(frozen=True, slots=True)
class TaggedInput(Generic[X]):
    """One sentence: its model input and its aligned tags."""

    inputs: X
    tags: AlignedTags


@dataclass(frozen=True, slots=True)
class TaggerEvaluation:
    metrics: EntityMetrics
    loss: float  # mean cross-entropy per tagged input position
    predictions: list[list[str]]  # per sentence, a tag per word

    def summary(self) -> dict[str, float]:
        return {**self.metrics.summary(), "loss": self.loss}


def target_tensor(aligned: Sequence[AlignedTags], width: int) -> torch.Tensor:
    """(sentences, width) targets, IGNORED past each sentence's end."""
    targets = torch.full((len(aligned), width), IGNORED, dtype=torch.long)
    for row, tags in enumerate(aligned):
        targets[row, : len(tags.targets)] = torch.tensor(tags.targets, dtype=torch.long)
    return targets


def tag_weights(aligned: Sequence[AlignedTags], n_tags: int) -> torch.Tensor:
    """Balanced loss weights over the tags of every trained position."""
    trained = [t for tags in aligned for t in tags.targets if t != IGNORED]
    return class_weights(trained, n_tags)


def evaluate_tagger(
    network: nn.Module,
    forward: Callable[[Sequence[X]], torch.Tensor],
    data: Sequence[TaggedInput[X]],
    tags: Sequence[str],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    should_stop: Callable[[], bool] = lambda: False,
) -> TaggerEvaluation:
    """Entity metrics of the tags predicted at each word's first position (a word cut off
    by the length limit is predicted O), and the mean loss; `should_stop` is polled before
    each batch (raising `TrainingStopped`)."""
    network.eval()
    total_loss = 0.0
    counted = 0
    true: list[list[str]] = []
    predicted: list[list[str]] = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            if should_stop():
                raise TrainingStopped("stopped while evaluating")
            chunk = data[start : start + batch_size]
            logits = forward([item.inputs for item in chunk])
            targets = target_tensor([item.tags for item in chunk], logits.shape[1])
            targets = targets.to(logits.device)
            flat = logits.reshape(-1, logits.shape[-1])
            total_loss += float(F.cross_entropy(flat, targets.reshape(-1), reduction="sum"))
            counted += int((targets != IGNORED).sum())
            best = logits.argmax(dim=-1).cpu().tolist()
            for row, item in enumerate(chunk):
                true.append([tags[t] for t in item.tags.tags])
                predicted.append(
                    [tags[best[row][s]] if s >= 0 else OUTSIDE for s in item.tags.word_starts]
                )
    return TaggerEvaluation(
        metrics=entity_metrics(true, predicted),
        loss=total_loss / max(1, counted),
        predictions=predicted,
    )


class TaggerTrainer(ClassifierTrainer[TaggedInput[X]]):
    """One run of `train_tagger`: the shared loop with a per-position loss and entity
    metrics."""

    def __init__(
        self,
        ctx: TrainingContext,
        *,
        network: nn.Module,
        forward: Callable[[Sequence[X]], torch.Tensor],
        train: Sequence[TaggedInput[X]],
        validation: Sequence[TaggedInput[X]],
        tags: Sequence[str],
        settings: LoopSettings,
        augment: Callable[[X, random.Random], X] | None = None,
        checkpoint_files: Sequence[Path] = (),
    ) -> None:
        if settings.class_weighting == "oversample":
            raise ValueError("a tagger's loss can be weighted by tag, not oversampled")

        def forward_items(items: Sequence[TaggedInput[X]]) -> torch.Tensor:
            return forward([item.inputs for item in items])

        augment_items = None
        if augment is not None:
            change = augment

            def augment_items(item: TaggedInput[X], rng: random.Random) -> TaggedInput[X]:
                return dataclasses.replace(item, inputs=change(item.inputs, rng))

        super().__init__(
            ctx,
            network=network,
            forward=forward_items,
            train=LabeledItems(list(train), [0] * len(train)),
            validation=LabeledItems(list(validation), [0] * len(validation)),
            labels=tags,
            settings=settings,
            augment=augment_items,
            item_tokens=[len(item.tags.targets) for item in train],
            checkpoint_files=checkpoint_files,
        )
        self.tag_forward = forward
        if settings.class_weighting == "weighted":
            self.loss_weights = tag_weights([item.tags for item in train], len(self.labels))

    def batch_loss(self, items: Sequence[TaggedInput[X]], batch: Sequence[int]) -> torch.Tensor:
        logits = self.forward(items)
        targets = target_tensor([item.tags for item in items], logits.shape[1])
        targets = targets.to(logits.device)
        if not bool((targets != IGNORED).any()):
            # Every word cut off: nothing to learn, and a mean over nothing is NaN.
            return logits.sum() * 0.0
        weights = None if self.loss_weights is None else self.loss_weights.to(logits.device)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), weight=weights
        )

    def validate(self) -> dict[str, float]:
        evaluation = evaluate_tagger(
            self.network,
            self.tag_forward,
            self.validation.items,
            self.labels,
            should_stop=self.ctx.should_stop,
        )
        return evaluation.summary()


def train_tagger(
    ctx: TrainingContext,
    *,
    network: nn.Module,
    forward: Callable[[Sequence[X]], torch.Tensor],
    train: Sequence[TaggedInput[X]],
    validation: Sequence[TaggedInput[X]],
    tags: Sequence[str],
    settings: LoopSettings,
    augment: Callable[[X, random.Random], X] | None = None,
    checkpoint_files: Sequence[Path] = (),
) -> LoopOutcome:
    """Train `network` (`forward`: a batch of inputs -> (batch, positions, tags) logits) and
    leave the best validation weights in it. `augment` changes a training input (not its
    tags); files in `checkpoint_files` (a vocabulary) are copied into every checkpoint."""
    return TaggerTrainer(
        ctx,
        network=network,
        forward=forward,
        train=train,
        validation=validation,
        tags=tags,
        settings=settings,
        augment=augment,
        checkpoint_files=checkpoint_files,
    ).run()
