"""A GRU classifier trained from scratch over a word-level vocabulary of the training texts:
embeddings, a (by default bidirectional) GRU, max pooling over time, dropout, a linear layer.
Cheaper than the LSTM by a quarter of the recurrent weights. Served by the `openmaas-nn`
runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.bilstm import DEFAULTS as LSTM_DEFAULTS
from openmaas.training.recipes.bilstm import check_recurrent, train_recurrent
from openmaas.training.recipes.classification import ClassificationRecipe

DEFAULTS: dict[str, Any] = {**LSTM_DEFAULTS}


class GRURecipe(ClassificationRecipe):
    name = "gru"
    data_parallel = True  # the shared loop over a word-level vocabulary
    batch_size_scales_with_data = True
    description = "GRU (bidirectional by default) from scratch with max pooling over time"
    search_space = {
        "learning_rate": {"type": "float", "low": 5e-4, "high": 2e-2, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.6},
        "hidden_size": {"type": "categorical", "choices": [64, 128, 256]},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    }

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def check(self, hp: Mapping[str, Any]) -> None:
        check_recurrent(hp)

    def train(self, ctx: TrainingContext) -> TrainingResult:
        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        return train_recurrent(self.name, "gru", hp, ctx)
