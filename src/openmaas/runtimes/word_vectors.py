"""The `word2vec` runtime: word vectors trained by OpenMaaS (the `word2vec` recipe), in the
directory format of `openmaas.word_vectors.saved`, served as text embeddings.

A text's embedding is the mean of the vectors of its words that have one, cut into words by
the tokenizer the model was trained with, then scaled to unit length unless the model says
`normalize: "none"` (the version's `normalize` param overrides the model's). Words without a
vector are skipped. A text with no known word at all (empty, or only unseen words) still gets
a usable vector: the mean of every word vector of the vocabulary, the embedding of "an
average text", near nothing in particular, never a zero vector whose cosine similarity is
undefined. Tokens are counted as words (at least 1 per text); there is no length limit, as
the cost is one lookup per word.

Example::

    source = ModelSource.for_directory(path, task="embedding", runtime="word2vec")
    model = WordVectorsRuntime().load(source, LoadOptions())
    model.embed(["bushfires near Sydney", "the Taliban in Kandahar"])  # shape (2, 100)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from safetensors import SafetensorError

from openmaas.errors import ModelLoadFailed
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime, l2_normalize
from openmaas.tasks.embedding import FloatArray
from openmaas.tasks.names import Task
from openmaas.word_vectors.saved import (
    NORMALIZATIONS,
    VECTORS_FILE,
    VOCABULARY_FILE,
    load_word_vectors,
)

# Resident bytes of the word -> row map per byte of vocabulary.json: a str object (~50 B plus
# the word) and a dict slot per word, against the word's few bytes of JSON (measured: ~5).
VOCABULARY_OVERHEAD_FACTOR = 6


class WordVectorsRuntime(Runtime):
    """Word vectors trained by the word2vec recipe, served on /v1/embeddings."""

    name = "word2vec"
    tasks = frozenset({Task.EMBEDDING})

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        try:
            vectors = (source.directory / VECTORS_FILE).stat().st_size
            vocabulary = (source.directory / VOCABULARY_FILE).stat().st_size
        except OSError:
            return super().estimate_memory_bytes(source)
        return vectors + vocabulary * VOCABULARY_OVERHEAD_FACTOR

    def load(self, source: ModelSource, options: LoadOptions) -> WordVectorsModel:
        return WordVectorsModel(source)


class WordVectorsModel(LoadedModel):
    truncatable_dimensions = False

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.tasks = frozenset({Task.EMBEDDING})
        if Task(source.task) is not Task.EMBEDDING:
            raise ModelLoadFailed(f"{source.label}: the word2vec runtime serves embedding only")
        try:
            saved = load_word_vectors(source.directory)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise ModelLoadFailed(f"{source.label}: cannot load the word vectors: {exc}") from exc
        normalize = source.params.get("normalize", saved.normalize)
        if normalize not in NORMALIZATIONS:
            raise ModelLoadFailed(
                f"{source.label}: param normalize must be one of {', '.join(NORMALIZATIONS)}, "
                f"not {normalize!r}"
            )
        self._normalize = normalize == "l2"
        self.tokenizer = saved.tokenizer
        self.vectors = saved.vectors
        self.rows = {word: row for row, word in enumerate(saved.words)}
        self.fallback: FloatArray = self.vectors.mean(axis=0, dtype=np.float32)
        self.embedding_dimensions = saved.dimensions
        self.memory_bytes = (
            self.vectors.nbytes
            + sys.getsizeof(self.rows)
            + sum(sys.getsizeof(word) for word in self.rows)
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(self.tokenizer.words(text))) for text in texts]

    def embed(self, texts: Sequence[str]) -> FloatArray:
        embeddings = np.empty((len(texts), self.vectors.shape[1]), dtype=np.float32)
        for i, text in enumerate(texts):
            rows = [self.rows[w] for w in self.tokenizer.words(text) if w in self.rows]
            embeddings[i] = self.vectors[rows].mean(axis=0) if rows else self.fallback
        return l2_normalize(embeddings) if self._normalize else embeddings

    def unload(self) -> None:
        del self.vectors
        self.rows = {}
