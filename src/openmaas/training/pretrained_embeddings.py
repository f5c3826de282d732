"""Registered word vectors as the starting point of a from-scratch network's embedding layer
(Kim 2014's CNN-static and CNN-non-static; any network over a word-level vocabulary).

A job names a word-vector model registered here (`embeddings`: the `word2vec` recipe's
output, or vectors imported from a word2vec/GloVe text file); the worker opens the version
pinned when the job was created and hands its directory to the recipe (`ctx.embeddings`).
Each word of the network's vocabulary takes the vector of the same word, else of a word that
differs from it only in case (imported vectors may be cased: the most frequent casing wins);
the others, as Kim did, a random vector drawn uniformly from [-0.25, 0.25] (seeded by the
job's seed). The padding row stays zero. `embeddings_mode` `static` freezes the layer,
`non-static` (the default) trains it with the rest.

The vectors decide the layer's width: a recipe's `embedding_dim` (or `d_model`) that differs
from it gives way, and the job says so.

Coverage is reported as an event and as metrics (`embeddings_coverage`, the share of the
vocabulary's words that got a vector; `embeddings_token_coverage`, the share of the training
texts' words), and recorded with the version.

Example::

    pretrained = load_pretrained(ctx, hp, tokenizer, train_rows)
    width = dimension_for(ctx, pretrained, hp, "embedding_dim")
    network = TextCNN(TextCNNConfig(vocab_size=..., embedding_dim=width, ...))
    install(network.embedding, pretrained)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from openmaas.nn.vocab import PAD_ID, UNKNOWN_ID
from openmaas.training.recipe import TrainingContext
from openmaas.word_vectors.saved import WordVectors, load_word_vectors

# Kim (2014): "unknown words ... initialized randomly", uniform in [-a, a] with a = 0.25, about
# the variance of the GoogleNews word2vec vectors.
RANDOM_VECTOR_RANGE = 0.25
STATIC = "static"
NON_STATIC = "non-static"


@dataclass(frozen=True, slots=True)
class PretrainedEmbeddings:
    """The initial embedding matrix of a vocabulary, and how much of it the vectors held."""

    matrix: torch.Tensor  # (vocabulary, dimensions), float32; row PAD_ID is zero
    mode: str  # static | non-static
    reference: str  # the word-vector model, name:version
    covered_words: int  # vocabulary words (specials aside) that got a pretrained vector
    vocabulary_words: int
    covered_tokens: int  # training-text words whose id got a pretrained vector
    total_tokens: int

    @property
    def dimensions(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def coverage(self) -> float:
        return self.covered_words / max(1, self.vocabulary_words)

    @property
    def token_coverage(self) -> float:
        return self.covered_tokens / max(1, self.total_tokens)

    def metrics(self) -> dict[str, float]:
        return {
            "embeddings_coverage": self.coverage,
            "embeddings_token_coverage": self.token_coverage,
        }

    def describe(self) -> dict[str, Any]:
        """What the version records of its starting vectors."""
        return {
            "model": self.reference,
            "mode": self.mode,
            "dimensions": self.dimensions,
            "covered_words": self.covered_words,
            "vocabulary_words": self.vocabulary_words,
            **self.metrics(),
        }


def embedding_matrix(
    tokenizer: Tokenizer, vectors: WordVectors, *, seed: int
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.bool_]]]:
    """(matrix, covered): the vocabulary's rows from `vectors`, random where they lack the
    word; `covered[i]` says whether row i came from the vectors."""
    rows = {word: row for row, word in enumerate(vectors.words)}
    # Imported vectors may be cased, our vocabulary never is: the first (most frequent)
    # casing of a word stands for it.
    for row, word in enumerate(vectors.words):
        rows.setdefault(word.lower(), row)
    vocabulary = tokenizer.get_vocab(with_added_tokens=True)
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(
        -RANDOM_VECTOR_RANGE, RANDOM_VECTOR_RANGE, (len(vocabulary), vectors.dimensions)
    ).astype(np.float32)
    covered = np.zeros(len(vocabulary), dtype=bool)
    for word, index in vocabulary.items():
        if index in (PAD_ID, UNKNOWN_ID):
            continue
        found = rows.get(word)
        if found is not None:
            matrix[index] = vectors.vectors[found]
            covered[index] = True
    matrix[PAD_ID] = 0.0
    return matrix, covered


def load_pretrained(
    ctx: TrainingContext,
    hp: Mapping[str, Any],
    tokenizer: Tokenizer,
    train_rows: Sequence[Sequence[int]],
) -> PretrainedEmbeddings | None:
    """The job's starting vectors for `tokenizer`'s vocabulary (None without `embeddings`),
    their coverage of the vocabulary and of `train_rows` (the training texts' ids) said in
    an event and reported as metrics."""
    if ctx.embeddings is None:
        return None
    vectors = load_word_vectors(ctx.embeddings)
    matrix, covered = embedding_matrix(tokenizer, vectors, seed=ctx.seed)
    specials = sum(1 for i in (PAD_ID, UNKNOWN_ID) if i < len(covered))
    counts = np.bincount(
        np.fromiter((i for row in train_rows for i in row), dtype=np.int64),
        minlength=len(covered),
    )
    pretrained = PretrainedEmbeddings(
        matrix=torch.from_numpy(matrix),
        mode=str(hp.get("embeddings_mode", NON_STATIC)),
        reference=ctx.embeddings_reference or str(hp.get("embeddings")),
        covered_words=int(covered.sum()),
        vocabulary_words=len(covered) - specials,
        covered_tokens=int(counts[covered].sum()),
        total_tokens=int(counts.sum()),
    )
    ctx.message(
        f"embeddings {pretrained.reference} ({pretrained.mode}, {pretrained.dimensions} "
        f"dimensions): {pretrained.covered_words:,} of the {pretrained.vocabulary_words:,} "
        f"vocabulary words have a vector ({pretrained.coverage:.1%}; "
        f"{pretrained.token_coverage:.1%} of the training words); the others start random "
        f"in [-{RANDOM_VECTOR_RANGE}, {RANDOM_VECTOR_RANGE}]"
    )
    ctx.report_metrics(0, 0, pretrained.metrics())
    return pretrained


def dimension_for(
    ctx: TrainingContext, pretrained: PretrainedEmbeddings | None, hp: Mapping[str, Any], name: str
) -> int:
    """The embedding width: hyperparameter `name`, or the vectors' when they differ (said)."""
    wanted = int(hp[name])
    if pretrained is None or pretrained.dimensions == wanted:
        return wanted
    ctx.message(
        f"{name} {wanted} differs from the {pretrained.dimensions} dimensions of embeddings "
        f"{pretrained.reference}: the embedding layer takes {pretrained.dimensions}",
        "warning",
    )
    return pretrained.dimensions


def random_vectors(embedding: nn.Embedding) -> None:
    """Kim's random start for every word (CNN-rand): uniform in [-0.25, 0.25], padding zero.
    On SST-2 (15,000 phrases, 4 epochs of Adadelta) it scored 0.782 on dev against 0.750
    for torch's N(0, 1), whose 300-d vectors dwarf the convolutions' first steps."""
    with torch.no_grad():
        embedding.weight.uniform_(-RANDOM_VECTOR_RANGE, RANDOM_VECTOR_RANGE)
        if embedding.padding_idx is not None:
            embedding.weight[embedding.padding_idx].zero_()


def install(embedding: nn.Embedding, pretrained: PretrainedEmbeddings | None) -> None:
    """Start `embedding` from the vectors; frozen when static."""
    if pretrained is None:
        return
    if tuple(embedding.weight.shape) != tuple(pretrained.matrix.shape):
        raise ValueError(
            f"the embedding layer is {tuple(embedding.weight.shape)}, the vectors "
            f"{tuple(pretrained.matrix.shape)}"
        )
    with torch.no_grad():
        embedding.weight.copy_(pretrained.matrix)
    embedding.weight.requires_grad_(pretrained.mode != STATIC)
