"""The servable directory of word vectors trained here, written by the `word2vec` recipe and
read by the `word2vec` runtime. Plain data only, never a pickle:

- `openmaas.json`: task, runtime and format (how the registry recognises the directory),
  `dimensions`, the tokenizer's settings, `normalize` (`"l2"` or `"none"`: whether served
  embeddings are scaled to unit length) and what trained it;
- `vectors.safetensors`: one float32 tensor, `vectors`, of shape (words, dimensions);
- `vocabulary.json`: `{"words": [...], "counts": [...]}`, the word of each row of `vectors`
  (most frequent first) and how often it occurred in the training texts.

Example::

    save_word_vectors(out, WordVectors(words, counts, vectors, WordTokenizer(), "l2"))
    saved = load_word_vectors(out)
    saved.vectors[saved.words.index("paris")]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file, save_file

from openmaas.runtimes.base import NATIVE_SPEC
from openmaas.word_vectors.tokenizer import WordTokenizer

RUNTIME = "word2vec"
TASK = "embedding"
FORMAT = "safetensors"
VECTORS_FILE = "vectors.safetensors"
VOCABULARY_FILE = "vocabulary.json"
VECTORS_TENSOR = "vectors"
SPEC_VERSION = 1
NORMALIZATIONS = ("l2", "none")

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class WordVectors:
    """Row i of `vectors` is the vector of `words[i]`, seen `counts[i]` times in training."""

    words: Sequence[str]
    counts: Sequence[int]
    vectors: FloatArray
    tokenizer: WordTokenizer
    normalize: str = "l2"
    extra: Mapping[str, Any] = field(default_factory=dict)  # recorded in openmaas.json

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])


def save_word_vectors(directory: Path, saved: WordVectors) -> None:
    check(saved)
    directory.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(saved.vectors, dtype=np.float32)
    save_file({VECTORS_TENSOR: vectors}, str(directory / VECTORS_FILE))
    vocabulary = {"words": list(saved.words), "counts": [int(c) for c in saved.counts]}
    (directory / VOCABULARY_FILE).write_text(
        json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8"
    )
    spec = {
        **saved.extra,
        "task": TASK,
        "runtime": RUNTIME,
        "format": FORMAT,
        "spec_version": SPEC_VERSION,
        "dimensions": saved.dimensions,
        "vocabulary_size": len(saved.words),
        "tokenizer": saved.tokenizer.to_dict(),
        "normalize": saved.normalize,
    }
    (directory / NATIVE_SPEC).write_text(json.dumps(spec, indent=2), encoding="utf-8")


def load_word_vectors(directory: Path) -> WordVectors:
    """The directory's vectors; OSError, ValueError or KeyError (naming the problem) for a
    directory this module did not write, or one that was changed."""
    spec = json.loads((directory / NATIVE_SPEC).read_text(encoding="utf-8"))
    if spec.get("runtime") != RUNTIME:
        raise ValueError(f"{NATIVE_SPEC} names runtime {spec.get('runtime')!r}, not {RUNTIME!r}")
    if int(spec.get("spec_version", 0)) > SPEC_VERSION:
        raise ValueError(
            f"{NATIVE_SPEC} is spec version {spec['spec_version']}; this server reads up to "
            f"{SPEC_VERSION}"
        )
    vocabulary = json.loads((directory / VOCABULARY_FILE).read_text(encoding="utf-8"))
    tensors = load_file(str(directory / VECTORS_FILE))
    saved = WordVectors(
        words=vocabulary["words"],
        counts=vocabulary["counts"],
        vectors=tensors[VECTORS_TENSOR],
        tokenizer=WordTokenizer.from_dict(spec["tokenizer"]),
        normalize=spec["normalize"],
        extra={k: v for k, v in spec.items() if k not in ("tokenizer", "normalize")},
    )
    check(saved)
    if saved.dimensions != spec["dimensions"]:
        raise ValueError(
            f"{VECTORS_FILE} holds {saved.dimensions}-dimensional vectors; {NATIVE_SPEC} "
            f"says {spec['dimensions']}"
        )
    return saved


def check(saved: WordVectors) -> None:
    """ValueError unless the words, counts and vectors line up."""
    vectors = saved.vectors
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] < 1:
        raise ValueError(
            f"the vectors must be a float32 matrix (words, dimensions), not {vectors.dtype} "
            f"of shape {vectors.shape}"
        )
    if not saved.words:
        raise ValueError("the vocabulary is empty")
    if not all(isinstance(word, str) and word for word in saved.words):
        raise ValueError("every word of the vocabulary must be a non-empty string")
    if len(set(saved.words)) != len(saved.words):
        raise ValueError("the vocabulary repeats a word")
    if not np.isfinite(vectors).all():
        raise ValueError("the vectors hold NaN or infinite values")
    if not len(saved.words) == len(saved.counts) == vectors.shape[0]:
        raise ValueError(
            f"{len(saved.words)} words, {len(saved.counts)} counts and {vectors.shape[0]} "
            "vectors: each word needs one count and one vector"
        )
    if saved.normalize not in NORMALIZATIONS:
        raise ValueError(
            f"normalize must be one of {', '.join(NORMALIZATIONS)}, not {saved.normalize!r}"
        )
