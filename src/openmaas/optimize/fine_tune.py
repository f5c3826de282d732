"""A short fine-tune of a changed (pruned) classifier on the job's training file, so it wins
back some of what the change cost: a few epochs of AdamW at a small learning rate, in place.

With distillation (the default when there is a fine-tune) the loss also pulls the pruned
network towards its parent: alpha · T² · KL(parent ‖ pruned) over outputs softened by
temperature T, plus (1 - alpha) · the cross-entropy on the file's labels (Hinton et al.,
2015; T² keeps the soft term's gradients on the scale of the hard one's). The parent's logits
are computed once, before pruning, on the same tokenized texts (`parent_logits`): no second
network in memory, and one forward pass over the file instead of one per epoch.

The examples are those of a text-classification file (`{"text", "label"}`); every label must
be one the classifier already has. Between steps the job may be stopped; each epoch reports
its mean loss as a job event.

Example::

    teacher = Distillation(parent_logits(context, network, tokenizer_dir), 2.0, 0.5)
    ...  # prune the network
    metrics = fine_tune_classifier(context, network, tokenizer_dir,
                                   FineTune(epochs=2, learning_rate=3e-5), teacher)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel

from openmaas.errors import InvalidRequest
from openmaas.optimize.methods import BuildContext

BATCH_SIZE = 16  # texts per step
MAX_TOKENS = 128  # texts are cut to this many tokens while fine-tuning (not when serving)
WEIGHT_DECAY = 0.01  # AdamW's, as transformers' Trainer recipes use
SEED = 0  # the order the examples are shuffled in, and dropout's draws


@dataclass(frozen=True, slots=True)
class FineTune:
    epochs: int
    learning_rate: float  # AdamW's, constant


@dataclass(frozen=True, slots=True)
class Distillation:
    logits: torch.Tensor  # the parent's, one row per training example in file order
    temperature: float
    alpha: float  # the soft (KL) term's weight; the labels' cross-entropy gets 1 - alpha


def parent_logits(
    context: BuildContext, network: PreTrainedModel, tokenizer_dir: Path
) -> torch.Tensor:
    """The (unpruned) classifier's logits for every training example, in file order."""
    examples = context.read_examples("training")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    context.message(f"Computing the parent's logits on {len(examples)} examples to distil from")
    rows = []
    with torch.no_grad():
        for start in range(0, len(examples), BATCH_SIZE):
            context.check_stop("while computing the parent's logits")
            texts = [str(example["text"]) for example in examples[start : start + BATCH_SIZE]]
            rows.append(network(**_tokenized(tokenizer, texts)).logits.float())
    return torch.cat(rows) if rows else torch.zeros(0)


def fine_tune_classifier(
    context: BuildContext,
    network: PreTrainedModel,
    tokenizer_dir: Path,
    plan: FineTune,
    teacher: Distillation | None = None,
) -> dict[str, float]:
    """Train `network` (a sequence classifier) on the job's training file; its metrics."""
    examples = context.read_examples("training")
    label_ids = _label_ids(network, examples)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    module: torch.nn.Module = network  # through nn.Module: transformers overrides it untyped
    trainable = [parameter for parameter in module.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=plan.learning_rate, weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(SEED)
    distilling = (
        f", distilling from the parent (temperature {teacher.temperature:g}, alpha "
        f"{teacher.alpha:g})"
        if teacher is not None
        else ""
    )
    context.message(
        f"Fine-tuning on {len(examples)} examples: {plan.epochs} epoch(s), AdamW at "
        f"learning rate {plan.learning_rate:g}{distilling}"
    )
    mean_loss = float("nan")
    module.train()
    # Dropout draws from torch's global generator: seeded here (and given back after), so a
    # job run twice fine-tunes alike (unseeded, SST-2 dev accuracy moved 0.833-0.862).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        try:
            for epoch in range(1, plan.epochs + 1):
                order = torch.randperm(len(examples), generator=generator).tolist()
                losses: list[float] = []
                for start in range(0, len(order), BATCH_SIZE):
                    context.check_stop(f"while fine-tuning (epoch {epoch})")
                    indices = order[start : start + BATCH_SIZE]
                    batch = [examples[i] for i in indices]
                    inputs = _tokenized(tokenizer, [str(example["text"]) for example in batch])
                    labels = torch.tensor([label_ids[str(example["label"])] for example in batch])
                    output = network(**inputs, labels=labels)
                    loss = output.loss
                    if teacher is not None:
                        soft = distillation_loss(output.logits, teacher.logits[indices], teacher)
                        loss = teacher.alpha * soft + (1 - teacher.alpha) * loss
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()
                    losses.append(float(loss.detach()))
                mean_loss = sum(losses) / len(losses)
                context.message(f"Fine-tune epoch {epoch}/{plan.epochs}: mean loss {mean_loss:.4f}")
        finally:
            module.eval()
    metrics = {
        "fine_tune_epochs": float(plan.epochs),
        "fine_tune_examples": float(len(examples)),
        "fine_tune_final_loss": mean_loss,
    }
    if teacher is not None:
        metrics["distillation_temperature"] = teacher.temperature
        metrics["distillation_alpha"] = teacher.alpha
    return metrics


def distillation_loss(
    logits: torch.Tensor, parent: torch.Tensor, teacher: Distillation
) -> torch.Tensor:
    """T² · KL(softmax(parent / T) ‖ softmax(logits / T)), averaged over the batch."""
    temperature = teacher.temperature
    ours = torch.nn.functional.log_softmax(logits / temperature, dim=-1)
    theirs = torch.nn.functional.log_softmax(parent / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(ours, theirs, reduction="batchmean", log_target=True)
    return kl * temperature**2


def _tokenized(tokenizer: Any, texts: list[str]) -> Any:
    return tokenizer(
        texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
    )


def _label_ids(network: PreTrainedModel, examples: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    config = network.config
    if config.problem_type == "multi_label_classification":
        raise InvalidRequest(
            "the fine-tune after pruning trains single-label classifiers; this one is "
            "multi-label: set settings.fine_tune_epochs to 0",
            param="settings.fine_tune_epochs",
        )
    ids = {str(label): int(index) for index, label in dict(config.id2label or {}).items()}
    if not examples:
        raise InvalidRequest("the training file holds no examples", param="training_file")
    given = {str(example["label"]) for example in examples}
    unknown = sorted(given - ids.keys())
    if unknown:
        raise InvalidRequest(
            f"the training file's labels {', '.join(unknown[:5])} are not the model's "
            f"({', '.join(sorted(ids))}): a fine-tune keeps the classifier's labels",
            param="training_file",
        )
    return ids
