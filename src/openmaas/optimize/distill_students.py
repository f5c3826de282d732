"""The students `distill` trains: one of the platform's own networks over a word-level
vocabulary of the training texts (served by `openmaas-nn`), or the teacher's first k
transformer layers (served by `transformers`).

Each starts as its recipe does (the recipe's architecture sizes and loop defaults: a
`textcnn` student is the network the `textcnn` recipe trains), trains in
`distill_training.DistillationTrainer`, and is written in the directory format its runtime
serves, with the teacher's labels in the teacher's order.

Example::

    student = train_network_student(ctx, "textcnn", data, settings)
    student.params  # {"labels": [...], "architecture": "textcnn", "recipe": "textcnn"}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from openmaas.optimize.distill_training import (
    AGREEMENT,
    DistillationTrainer,
    SoftTargets,
    held_out_agreement,
    soften,
)
from openmaas.training.hyperparameters import LoopSettings
from openmaas.training.loop import LoopOutcome
from openmaas.training.recipe import TrainingContext

if TYPE_CHECKING:
    from openmaas.optimize.methods import BuildContext

# A checkpoint per epoch is enough: an optimization job restarts from scratch, not from one.
NO_MID_EPOCH_CHECKPOINTS = 10**9


@dataclass(frozen=True, slots=True)
class DistillData:
    labels: tuple[str, ...]  # the teacher's, in its order
    train: SoftTargets
    held_out: SoftTargets


@dataclass(frozen=True, slots=True)
class Student:
    """What was written to the output folder, as `Built` needs it."""

    runtime: str
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)


def loop_settings(recipe_defaults: Mapping[str, Any], settings: Mapping[str, Any]) -> LoopSettings:
    """The recipe's loop, with the method's epochs, batch size, learning rate (None: the
    recipe's) and patience, stopping early on agreement with the teacher."""
    learning_rate = settings.get("learning_rate")
    hp = {
        **recipe_defaults,
        "n_epochs": settings["epochs"],
        "batch_size": settings["batch_size"],
        "learning_rate": recipe_defaults["learning_rate"]
        if learning_rate is None
        else learning_rate,
        "learning_rate_multiplier": 1.0,
        "patience": settings["patience"],
        "early_stopping_metric": AGREEMENT,
        "early_stopping_min_delta": 0.0,
        "class_weighting": "none",
        "augment": False,
        "checkpoint_every_steps": NO_MID_EPOCH_CHECKPOINTS,
    }
    return LoopSettings.from_hyperparameters(hp, stopping_metrics=(AGREEMENT,))


def train_network_student(
    ctx: TrainingContext, student: str, data: DistillData, settings: Mapping[str, Any]
) -> Student:
    """A `textcnn`, `bilstm` or `transformer_encoder` student, served by `openmaas-nn`."""
    from openmaas.nn.saved import RUNTIME, min_length, save_classifier
    from openmaas.nn.vocab import pad_batch, token_ids
    from openmaas.training.pretrained_embeddings import dimension_for, install, load_pretrained
    from openmaas.training.recipes.word_level import prepare_vocabulary

    defaults = _recipe_defaults(student)
    loop = loop_settings(defaults, settings)
    torch.manual_seed(ctx.seed)
    tokenizer, _ = prepare_vocabulary(ctx, data.train.texts, defaults)
    # The job's word vectors (`embeddings`), if any: they set the embedding width.
    pretrained = load_pretrained(
        ctx,
        {"embeddings_mode": settings["embeddings_mode"]},
        tokenizer,
        token_ids(tokenizer, data.train.texts, max_length=int(defaults["max_length"])),
    )
    width_name = "d_model" if student == "transformer_encoder" else "embedding_dim"
    sizes = {**defaults, width_name: dimension_for(ctx, pretrained, defaults, width_name)}
    network, architecture, served_tokens = _network(
        student, sizes, int(tokenizer.get_vocab_size(with_added_tokens=True)), len(data.labels)
    )
    install(_embedding_layer(network), pretrained)
    device = torch.device(ctx.device)
    network.to(device)
    padded_to = min_length(network)
    trained_tokens = int(defaults["max_length"])

    def forward_at(max_length: int) -> Callable[[Sequence[str]], torch.Tensor]:
        def forward(texts: Sequence[str]) -> torch.Tensor:
            ids, lengths = pad_batch(
                token_ids(tokenizer, texts, max_length=max_length), min_length=padded_to
            )
            logits: torch.Tensor = network(ids.to(device), lengths)
            return logits

        return forward

    outcome = _train(ctx, network, forward_at(trained_tokens), data, settings, loop)
    # The registered agreement is the student's as served: texts cut where the server cuts.
    agreement = _agreement(network, forward_at(served_tokens), data, settings)
    save_classifier(
        ctx.output_dir,
        architecture,
        network.cpu().eval(),
        tokenizer,
        labels=data.labels,
        max_input_tokens=served_tokens,
        extra={"recipe": student, "trained_max_length": trained_tokens, "distilled": True},
    )
    params: dict[str, Any] = {
        "labels": list(data.labels),
        "architecture": architecture,
        "recipe": student,
    }
    metrics = _metrics(agreement, outcome)
    if pretrained is not None:
        params["embeddings"] = pretrained.describe()
        metrics.update(pretrained.metrics())
    return Student(runtime=RUNTIME, params=params, metrics=metrics)


def train_fewer_layers(
    ctx: TrainingContext,
    context: BuildContext,
    n_layers: int,
    data: DistillData,
    settings: Mapping[str, Any],
) -> Student:
    """The teacher's embeddings, first `n_layers` encoder layers and head, trained on its
    soft labels; written in the teacher's layout and served by `transformers`."""
    from transformers import AutoTokenizer

    from openmaas.optimize.checkpoints import (
        checkpoint_directory,
        keep_first_layers,
        open_network,
        write_network,
    )
    from openmaas.training.recipes.finetune_transformer import DEFAULTS
    from openmaas.training.recipes.sequence_classification import (
        RUNTIME,
        forward_texts,
        served_max_length,
    )

    loop = loop_settings(DEFAULTS, settings)
    torch.manual_seed(ctx.seed)
    network = open_network(context)
    before = int(network.config.num_hidden_layers)
    keep_first_layers(network, n_layers)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_directory(context.parent))
    # Its labels are the teacher's, in its order: the runtime read them from this config.
    device = torch.device(ctx.device)
    module: nn.Module = network  # through nn.Module: transformers leaves it untyped
    module.to(device)
    trained_tokens = int(DEFAULTS["max_length"])

    def forward_at(max_length: int) -> Callable[[Sequence[str]], torch.Tensor]:
        def forward(texts: Sequence[str]) -> torch.Tensor:
            return forward_texts(network, tokenizer, texts, max_length=max_length, device=device)

        return forward

    ctx.message(f"Student: the teacher's first {n_layers} of {before} layers")
    outcome = _train(ctx, module, forward_at(trained_tokens), data, settings, loop)
    agreement = _agreement(
        module, forward_at(served_max_length(network, tokenizer)), data, settings
    )
    module.cpu()
    params = write_network(context, network)
    return Student(
        runtime=RUNTIME,
        params={**params, "labels": list(data.labels), "teacher_layers": n_layers},
        metrics=_metrics(agreement, outcome),
    )


def _train(
    ctx: TrainingContext,
    network: nn.Module,
    forward: Callable[[Sequence[str]], torch.Tensor],
    data: DistillData,
    settings: Mapping[str, Any],
    loop: LoopSettings,
) -> LoopOutcome:
    return DistillationTrainer(
        ctx,
        network=network,
        forward=forward,
        train=data.train,
        held_out=data.held_out,
        labels=data.labels,
        settings=loop,
        temperature=float(settings["temperature"]),
        alpha=float(settings["alpha"]),
    ).run()


def _agreement(
    network: nn.Module,
    forward: Callable[[Sequence[str]], torch.Tensor],
    data: DistillData,
    settings: Mapping[str, Any],
) -> float:
    temperature = float(settings["temperature"])
    targets = soften(data.held_out.probabilities, temperature)
    agreement, _ = held_out_agreement(network, forward, data.held_out.texts, targets, temperature)
    return agreement


def _metrics(agreement: float, outcome: LoopOutcome) -> dict[str, float]:
    return {"teacher_agreement_heldout": agreement, "distill_epochs": float(outcome.epochs)}


# How a student trains where it differs from its recipe's defaults. The textcnn recipe trains
# as Kim (2014) did (Adadelta, 300-d vectors, up to 25 epochs): too slow a start for the 10
# epochs of a distillation on a few hundred texts (a 300-text unit test ran past its 15-minute
# timeout on a loaded machine). Its students keep the recipe's earlier AdamW training.
STUDENT_TRAINING: dict[str, dict[str, Any]] = {
    "textcnn": {
        "optimizer": "adamw",
        "learning_rate": 3e-3,
        "weight_decay": 0.01,
        "schedule": "linear",
        "max_grad_norm": 1.0,
        "embedding_dim": 128,
    },
}


def _recipe_defaults(student: str) -> dict[str, Any]:
    from openmaas.training.recipes import bilstm, textcnn, transformer_encoder

    modules = {"textcnn": textcnn, "bilstm": bilstm, "transformer_encoder": transformer_encoder}
    return {**modules[student].DEFAULTS, **STUDENT_TRAINING.get(student, {})}


def _embedding_layer(network: nn.Module) -> nn.Embedding:
    """The student's word embeddings (each network names its layer)."""
    for name in ("embedding", "tokens"):
        layer = getattr(network, name, None)
        if isinstance(layer, nn.Embedding):
            return layer
    raise TypeError(f"{type(network).__name__} has no word-embedding layer")


def _network(
    student: str, hp: Mapping[str, Any], vocab_size: int, n_labels: int
) -> tuple[nn.Module, str, int]:
    """(the network as its recipe builds it, its `openmaas.nn.saved` architecture, the
    longest input it serves in tokens)."""
    from openmaas.nn.saved import LONGEST_INPUT_TOKENS

    if student == "textcnn":
        from openmaas.nn.textcnn import TextCNN, TextCNNConfig

        config = TextCNNConfig(
            vocab_size=vocab_size,
            n_labels=n_labels,
            embedding_dim=hp["embedding_dim"],
            filter_widths=tuple(hp["filter_widths"]),
            n_filters=hp["n_filters"],
            dropout=hp["dropout"],
        )
        return TextCNN(config), "textcnn", LONGEST_INPUT_TOKENS
    if student == "bilstm":
        from openmaas.nn.rnn import RNNClassifier, RNNConfig

        rnn = RNNConfig(
            vocab_size=vocab_size,
            n_labels=n_labels,
            cell="lstm",
            embedding_dim=hp["embedding_dim"],
            hidden_size=hp["hidden_size"],
            n_layers=hp["n_layers"],
            bidirectional=hp["bidirectional"],
            pooling=hp["pooling"],
            dropout=hp["dropout"],
        )
        return RNNClassifier(rnn), "rnn", LONGEST_INPUT_TOKENS
    from openmaas.nn.encoder import EncoderConfig, TransformerEncoderClassifier

    encoder = EncoderConfig(
        vocab_size=vocab_size,
        n_labels=n_labels,
        max_length=hp["max_length"],
        d_model=hp["d_model"],
        n_heads=hp["n_heads"],
        n_layers=hp["n_layers"],
        ff_dim=hp["ff_dim"],
        dropout=hp["dropout"],
    )
    return TransformerEncoderClassifier(encoder), "transformer-encoder", int(hp["max_length"])
