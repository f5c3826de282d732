"""A recurrent tagger: one label per piece of text from a (bi)LSTM or GRU over word embeddings
and a casing feature. Trained by the `bilstm_tagger` recipe, served by the `openmaas-nn`
runtime for token classification.

Texts are cut into pieces by the classifiers' word-level tokenizer (`openmaas.nn.vocab`:
whitespace, then every punctuation character, lowercased), each with its character offsets.
Training and serving both go through `encode_texts`, so a sentence tagged in training and the
same text sent to `/v1/ner` reach the network as the same pieces. The vocabulary is lowercased,
which would hide the strongest cue for a name it has never seen; each piece's casing (lower,
Title, UPPER, digits, ...) is embedded beside its word, as Collobert et al. (2011) and Reimers
& Gurevych (2017) do.

Sequences are packed, so padding never enters the recurrence: a text is tagged the same alone
and in any batch.

Example::

    pieces = encode_texts(tokenizer, ["Angela Merkel visited Paris."], max_length=128)
    ids, casing, lengths = pad_pieces(pieces)
    network = RNNTagger(RNNTaggerConfig(vocab_size=20_000, n_labels=9))
    logits = network(ids, lengths, casing)  # (batch, pieces, n_labels)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from openmaas.nn.vocab import PAD_ID, UNKNOWN_ID

CELLS = ("lstm", "gru")
# A piece's shape; 0 is padding.
CASINGS = (
    "padding",
    "lower",  # paris
    "title",  # Paris, A
    "upper",  # NATO
    "mixed",  # iPhone
    "numeric",  # 1996
    "has_digit",  # 1996-08-30's pieces are numeric; A380 has a digit
    "punctuation",  # . , (
    "other",  # no case: 北京
)
CASING_INDEX = {name: index for index, name in enumerate(CASINGS)}


def casing_of(piece: str) -> int:
    """The index in `CASINGS` of a piece's shape."""
    if not any(character.isalnum() for character in piece):
        return CASING_INDEX["punctuation"]
    if piece.isdigit():
        return CASING_INDEX["numeric"]
    if any(character.isdigit() for character in piece):
        return CASING_INDEX["has_digit"]
    if piece.islower():
        return CASING_INDEX["lower"]
    if piece.isupper() and len(piece) > 1:
        return CASING_INDEX["upper"]
    if piece[0].isupper():
        return CASING_INDEX["title"]
    if any(character.isupper() for character in piece):
        return CASING_INDEX["mixed"]
    return CASING_INDEX["other"]


@dataclass(frozen=True, slots=True)
class Pieces:
    """A text as the tagger reads it: per piece its word id, casing and character offsets."""

    ids: tuple[int, ...]
    casing: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]  # into the text, end exclusive; (0, 0): no piece

    def __len__(self) -> int:
        return len(self.ids)


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], *, max_length: int) -> list[Pieces]:
    """The pieces of each text, cut at `max_length`. A text without any becomes one unknown
    piece with empty offsets (a sequence needs a length of one), which tags nothing.

    Truncation is done here, not with `enable_truncation`: that is state inside the Rust
    object, and the server counts tokens on one thread while a batch runs on another.
    """
    if not texts:
        return []
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    rows = []
    for text, encoding in zip(texts, encodings, strict=True):
        offsets = tuple((int(start), int(end)) for start, end in encoding.offsets[:max_length])
        if not offsets:
            rows.append(Pieces((UNKNOWN_ID,), (CASING_INDEX["other"],), ((0, 0),)))
            continue
        rows.append(
            Pieces(
                ids=tuple(encoding.ids[:max_length]),
                casing=tuple(casing_of(text[start:end]) for start, end in offsets),
                offsets=offsets,
            )
        )
    return rows


def pad_pieces(rows: Sequence[Pieces]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, casing, lengths): right-padded to the longest row."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    casing = torch.zeros((len(rows), width), dtype=torch.long)  # 0: padding
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row.ids, dtype=torch.long)
        casing[i, : len(row)] = torch.tensor(row.casing, dtype=torch.long)
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    return ids, casing, lengths


@dataclass(frozen=True, slots=True)
class RNNTaggerConfig:
    vocab_size: int
    n_labels: int
    cell: str = "lstm"
    embedding_dim: int = 100
    casing_dim: int = 16
    hidden_size: int = 128  # per direction
    n_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5  # on the inputs, between layers and on the outputs

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {self.cell!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RNNTaggerConfig:
        return cls(**values)


class RNNTagger(nn.Module):
    def __init__(self, config: RNNTaggerConfig) -> None:
        super().__init__()
        self.config = config
        self.min_length = 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.casing = nn.Embedding(len(CASINGS), config.casing_dim, padding_idx=0)
        recurrent = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.recurrent = recurrent(
            config.embedding_dim + config.casing_dim,
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

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, casing: torch.Tensor
    ) -> torch.Tensor:
        embedded = torch.cat([self.embedding(ids), self.casing(casing)], dim=2)
        packed = pack_padded_sequence(
            self.dropout(embedded), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, _ = self.recurrent(packed)
        padded, _ = pad_packed_sequence(outputs, batch_first=True, total_length=ids.shape[1])
        logits: torch.Tensor = self.head(self.dropout(padded))
        return logits
