"""A small Transformer encoder trained from scratch: word embeddings plus learned position
embeddings, pre-norm self-attention layers, mean pooling over the text's tokens, dropout and a
linear layer.

Example::

    network = TransformerEncoderClassifier(EncoderConfig(vocab_size=20_000, n_labels=4))
    logits = network(ids, lengths)  # (batch, n_labels); ids at most max_length wide
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    vocab_size: int
    n_labels: int
    max_length: int = 128  # positions learned, so the longest input in tokens
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderConfig:
        return cls(**values)


class TransformerEncoderClassifier(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.min_length = 1
        self.tokens = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0)
        self.positions = nn.Embedding(config.max_length, config.d_model)
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.n_heads,
            dim_feedforward=config.ff_dim,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,  # pre-norm trains stably from scratch without a long warmup
        )
        # Nested tensors are an inference shortcut that pre-norm layers cannot take (and torch
        # warns about it when asked).
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.d_model, config.n_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = self.dropout(self.tokens(ids) + self.positions(positions).unsqueeze(0))
        padding = positions.unsqueeze(0) >= lengths.to(ids.device).unsqueeze(1)
        hidden = self.norm(self.encoder(hidden, src_key_padding_mask=padding))
        hidden = hidden.masked_fill(padding.unsqueeze(2), 0.0)
        pooled = hidden.sum(dim=1) / lengths.to(hidden.device).unsqueeze(1).clamp(min=1)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits
