"""TextCNN (Kim 2014, "Convolutional Neural Networks for Sentence Classification"): word
embeddings, parallel convolutions of several widths, ReLU, max-over-time pooling, dropout and
a linear layer, whose weight vectors (one per label) are rescaled to an L2 norm of at most
`max_norm` after each training step (Kim's "l2 constraint", s = 3) when it is above 0.

Example::

    network = TextCNN(TextCNNConfig(vocab_size=20_000, n_labels=2), max_norm=3.0)
    logits = network(ids, lengths)  # (batch, n_labels)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class TextCNNConfig:
    vocab_size: int
    n_labels: int
    embedding_dim: int = 128
    filter_widths: tuple[int, ...] = (3, 4, 5)  # tokens per window (Kim: 3, 4, 5)
    n_filters: int = 100  # feature maps per width (Kim: 100)
    dropout: float = 0.5  # on the pooled features (Kim: 0.5)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TextCNNConfig:
        return cls(**{**values, "filter_widths": tuple(values["filter_widths"])})


class TextCNN(nn.Module):
    def __init__(self, config: TextCNNConfig, *, max_norm: float = 0.0) -> None:
        super().__init__()
        self.config = config
        self.max_norm = max_norm  # a training constraint: not part of the saved config
        # Batches are padded to at least the widest filter, so every filter has a window.
        self.min_length = max(config.filter_widths)
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.convolutions = nn.ModuleList(
            nn.Conv1d(config.embedding_dim, config.n_filters, width)
            for width in config.filter_widths
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.n_filters * len(config.filter_widths), config.n_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(ids).transpose(1, 2)  # (batch, embedding, tokens)
        positions = torch.arange(ids.shape[1], device=ids.device)
        lengths = lengths.to(ids.device)
        pooled = []
        for convolution, width in zip(self.convolutions, self.config.filter_widths, strict=True):
            features = torch.relu(convolution(embedded))  # (batch, filters, windows)
            # Windows that reach into the padding do not exist in an unpadded text: zeroing
            # them (ReLU outputs are >= 0) keeps the max independent of the batch's padding.
            # A text shorter than the filter keeps its one window, padded as when alone.
            windows = (lengths - width + 1).clamp(min=1)
            valid = positions[: features.shape[2]].unsqueeze(0) < windows.unsqueeze(1)
            pooled.append((features * valid.unsqueeze(1)).amax(dim=2))
        logits: torch.Tensor = self.head(self.dropout(torch.cat(pooled, dim=1)))
        return logits

    def apply_constraints(self) -> None:
        """Kim's max-norm: each label's weight vector back to norm `max_norm` if above it."""
        if self.max_norm > 0:
            self.head.weight.copy_(torch.renorm(self.head.weight, 2, 0, self.max_norm))
