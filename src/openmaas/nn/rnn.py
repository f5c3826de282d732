"""Recurrent classifiers: a (bidirectional) LSTM or GRU over word embeddings, its outputs
pooled over time (max, mean, or the last state of each direction), dropout and a linear layer.

Sequences are packed, so padding never enters the recurrence: a text scores the same alone
and in any batch.

Example::

    network = RNNClassifier(RNNConfig(vocab_size=20_000, n_labels=4, cell="gru"))
    logits = network(ids, lengths)  # (batch, n_labels)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = ("lstm", "gru")
POOLINGS = ("max", "mean", "last")


@dataclass(frozen=True, slots=True)
class RNNConfig:
    vocab_size: int
    n_labels: int
    cell: str = "lstm"
    embedding_dim: int = 128
    hidden_size: int = 128  # per direction
    n_layers: int = 1
    bidirectional: bool = True
    pooling: str = "max"
    dropout: float = 0.3  # on embeddings, between layers and on the pooled features

    def __post_init__(self) -> None:
        if self.cell not in CELLS or self.pooling not in POOLINGS:
            raise ValueError(
                f"cell must be one of {', '.join(CELLS)} and pooling one of "
                f"{', '.join(POOLINGS)}; got {self.cell!r} and {self.pooling!r}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RNNConfig:
        return cls(**values)


class RNNClassifier(nn.Module):
    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        self.min_length = 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        recurrent = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.recurrent = recurrent(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.n_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            # Between stacked layers only: torch warns when given it for a single layer.
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(config.hidden_size * directions, config.n_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.dropout(self.embedding(ids))
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, state = self.recurrent(packed)
        if self.config.pooling == "last":
            hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            directions = 2 if self.config.bidirectional else 1
            pooled = torch.cat(list(hidden[-directions:]), dim=1)
        else:
            padded, _ = pad_packed_sequence(outputs, batch_first=True, total_length=ids.shape[1])
            positions = torch.arange(ids.shape[1], device=ids.device)
            mask = (positions.unsqueeze(0) < lengths.to(ids.device).unsqueeze(1)).unsqueeze(2)
            if self.config.pooling == "max":
                pooled = padded.masked_fill(~mask, torch.finfo(padded.dtype).min).amax(dim=1)
            else:
                pooled = (padded * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits
