"""The hyperparameters every classification recipe shares, and their validation.

A recipe's `defaults()` is `COMMON_DEFAULTS` updated with its own values and architecture
sizes; `LoopSettings.from_hyperparameters` checks and converts the shared ones (a ValueError
names the bad value and what is allowed). Nothing here imports torch, so validating a job's
hyperparameters costs nothing.

Example::

    settings = LoopSettings.from_hyperparameters({**COMMON_DEFAULTS, "n_epochs": 3})
    settings.learning_rate  # learning_rate * learning_rate_multiplier
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Names recipes give the hyperparameters OpenAI calls n_epochs, batch_size and (the base of)
# learning_rate_multiplier.
EPOCH_NAMES = ("n_epochs", "epochs", "num_epochs")
BATCH_NAMES = ("batch_size",)
LEARNING_RATE_NAMES = ("learning_rate", "lr")

OPTIMIZERS = ("adamw", "sgd", "adadelta")
SCHEDULES = ("linear", "cosine", "constant")  # after the warmup: decay to 0, or hold
CLASS_WEIGHTINGS = ("none", "weighted", "oversample")
# Validation metrics early stopping can follow; all but loss are better when higher.
STOPPING_METRICS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "loss",
)

COMMON_DEFAULTS: dict[str, Any] = {
    "n_epochs": 5,
    "batch_size": 32,  # examples per optimizer step
    "learning_rate": 1e-3,
    "learning_rate_multiplier": 1.0,  # the OpenAI fine-tuning knob: scales learning_rate
    "optimizer": "adamw",  # or "sgd" (momentum 0.9), or "adadelta" (rho 0.95, Kim 2014)
    "momentum": 0.9,  # sgd only
    "weight_decay": 0.01,  # decoupled (AdamW) or L2 (SGD); never on biases and norms
    "dropout": 0.1,
    "warmup_ratio": 0.0,  # share of all steps spent raising the learning rate from 0
    "schedule": "linear",
    "max_grad_norm": 1.0,  # clip the global gradient norm; 0 turns clipping off
    "early_stopping_metric": "macro_f1",  # on the validation split, checked each epoch
    "patience": 2,  # epochs without improvement before stopping; 0 never stops early
    "early_stopping_min_delta": 0.0,  # the least change of the metric that counts as better
    "class_weighting": "none",  # "weighted" (balanced loss weights) or "oversample"
    "augment": False,  # random word dropout and neighbour swaps on training texts
    "max_length": 128,  # tokens per text in training
    "checkpoint_every_steps": 200,  # also at every epoch's end
}

# The recipes that train a network from scratch over a word-level vocabulary add these.
VOCABULARY_DEFAULTS: dict[str, Any] = {
    "max_vocab_size": 30_000,  # words, [PAD] and [UNK] included
    "min_frequency": 2,  # occurrences in the training texts
    # A registered word-vector model the embedding layer starts from (None: random), trained
    # with the network ("non-static") or frozen ("static"); see training.pretrained_embeddings.
    "embeddings": None,
    "embeddings_mode": "non-static",
}
EMBEDDINGS_MODES = ("static", "non-static")
MAX_REFERENCE_CHARS = 256
PRECISIONS = ("bf16-if-supported", "bf16", "fp32")  # as training.precision reads them


@dataclass(frozen=True, slots=True)
class LoopSettings:
    n_epochs: int
    batch_size: int
    learning_rate: float  # the peak rate, multiplier applied
    optimizer: str
    momentum: float
    weight_decay: float
    warmup_ratio: float
    schedule: str
    max_grad_norm: float
    early_stopping_metric: str
    patience: int
    early_stopping_min_delta: float
    class_weighting: str
    augment: bool
    checkpoint_every_steps: int
    # Declared only by the recipes whose defaults name them (the transformer fine-tune):
    # batches of near-equal lengths (`training.batch_order`) and the number format
    # (`training.precision`: bf16-if-supported, bf16 or fp32).
    group_by_length: bool = False
    precision: str = "fp32"

    @classmethod
    def from_hyperparameters(
        cls, hp: Mapping[str, Any], stopping_metrics: tuple[str, ...] = STOPPING_METRICS
    ) -> LoopSettings:
        """`stopping_metrics`: what the recipe's validation pass reports (a tagger reports
        entity F1, not macro F1)."""
        return cls(
            n_epochs=positive_int(hp, "n_epochs"),
            batch_size=positive_int(hp, "batch_size"),
            learning_rate=positive_float(hp, "learning_rate")
            * positive_float(hp, "learning_rate_multiplier"),
            optimizer=choice(hp, "optimizer", OPTIMIZERS),
            momentum=fraction(hp, "momentum"),
            weight_decay=non_negative_float(hp, "weight_decay"),
            warmup_ratio=fraction(hp, "warmup_ratio"),
            schedule=choice(hp, "schedule", SCHEDULES),
            max_grad_norm=non_negative_float(hp, "max_grad_norm"),
            early_stopping_metric=choice(hp, "early_stopping_metric", stopping_metrics),
            patience=non_negative_int(hp, "patience"),
            early_stopping_min_delta=non_negative_float(hp, "early_stopping_min_delta"),
            class_weighting=choice(hp, "class_weighting", CLASS_WEIGHTINGS),
            augment=boolean(hp, "augment"),
            checkpoint_every_steps=positive_int(hp, "checkpoint_every_steps"),
            group_by_length=boolean(hp, "group_by_length") if "group_by_length" in hp else False,
            precision=choice(hp, "precision", PRECISIONS) if "precision" in hp else "fp32",
        )


def check_vocabulary(hp: Mapping[str, Any]) -> None:
    """The `VOCABULARY_DEFAULTS` values."""
    positive_int(hp, "max_vocab_size")
    positive_int(hp, "min_frequency")
    embeddings_reference(hp)
    choice(hp, "embeddings_mode", EMBEDDINGS_MODES)


def embeddings_reference(hp: Mapping[str, Any]) -> str | None:
    """The `embeddings` hyperparameter: None, or a model reference (name, name:version,
    name@alias)."""
    value = hp.get("embeddings")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REFERENCE_CHARS:
        raise ValueError(
            "hyperparameter 'embeddings' must name a registered word-vector model "
            f"(name, name:version or name@alias), got {value!r}"
        )
    return value


def _number(hp: Mapping[str, Any], name: str) -> float:
    value = hp[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"hyperparameter {name!r} must be a number, got {value!r}")
    return float(value)


def _integer(hp: Mapping[str, Any], name: str) -> int:
    value = hp[name]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"hyperparameter {name!r} must be an integer, got {value!r}")
    return value


def positive_int(hp: Mapping[str, Any], name: str) -> int:
    value = _integer(hp, name)
    if value < 1:
        raise ValueError(f"hyperparameter {name!r} must be at least 1, got {value}")
    return value


def non_negative_int(hp: Mapping[str, Any], name: str) -> int:
    value = _integer(hp, name)
    if value < 0:
        raise ValueError(f"hyperparameter {name!r} must be 0 or more, got {value}")
    return value


def positive_int_list(hp: Mapping[str, Any], name: str) -> list[int]:
    values = hp[name]
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"hyperparameter {name!r} must be a list of integers, got {values!r}")
    return [positive_int({name: value}, name) for value in values]


def positive_float(hp: Mapping[str, Any], name: str) -> float:
    value = _number(hp, name)
    if value <= 0:
        raise ValueError(f"hyperparameter {name!r} must be above 0, got {value}")
    return value


def non_negative_float(hp: Mapping[str, Any], name: str) -> float:
    value = _number(hp, name)
    if value < 0:
        raise ValueError(f"hyperparameter {name!r} must be 0 or more, got {value}")
    return value


def fraction(hp: Mapping[str, Any], name: str) -> float:
    """In [0, 1)."""
    value = _number(hp, name)
    if not 0 <= value < 1:
        raise ValueError(f"hyperparameter {name!r} must be in [0, 1), got {value}")
    return value


def choice(hp: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = hp[name]
    if value not in allowed:
        raise ValueError(
            f"hyperparameter {name!r} must be one of {', '.join(allowed)}, got {value!r}"
        )
    return str(value)


def boolean(hp: Mapping[str, Any], name: str) -> bool:
    value = hp[name]
    if not isinstance(value, bool):
        raise ValueError(f"hyperparameter {name!r} must be true or false, got {value!r}")
    return value
