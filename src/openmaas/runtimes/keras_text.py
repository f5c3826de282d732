"""Text to the token ids (or bag-of-words vectors) a Keras text classifier takes, in Python.

Keras text models come with their preprocessing in one of three forms, each reproduced here
exactly as Keras computes it, because Keras's own `TextVectorization` needs TensorFlow:

- a `TextVectorization` layer inside the model (its config and vocabulary, stored in the
  `.keras` file): `Vectorizer.from_layer_config`;
- a vocabulary file beside the model (`vocabulary.txt`, one token a line, as
  `layer.get_vocabulary()` lists them) for a model whose input is already token ids:
  `Vectorizer(...)` with `TextVectorization`'s defaults;
- the JSON of the classic `keras.preprocessing.text.Tokenizer` (`tokenizer.to_json()`), with
  `pad_sequences` to the model's input length: `KerasTokenizer`.

Example::

    vectorizer = Vectorizer(vocabulary=["", "[UNK]", "great", "film"], sequence_length=4)
    vectorizer.encode(["A great film!"])  # -> int64 array [[1, 2, 3, 0]]
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from openmaas.errors import UnsupportedSource

MASK_TOKEN = ""
OOV_TOKEN = "[UNK]"  # noqa: S105 - Keras's out-of-vocabulary token, not a secret
# TextVectorization's `strip_punctuation` (Keras 3, text_vectorization.py): the class holds
# the range ",-." and so the hyphen.
PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
# tf.strings.split without a separator splits on ASCII whitespace only.
WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")
# tf.strings.lower without an encoding lowercases ASCII letters only.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
STANDARDIZE = (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")
SPLIT = (None, "whitespace", "character")
OUTPUT_MODES = ("int", "multi_hot", "count")
PADDING = ("pre", "post")
IntArray = npt.NDArray[np.int64]


class TextEncoder(Protocol):
    """Texts to one array the network takes (rows in input order)."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[Any]: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Vectorizer:
    """`keras.layers.TextVectorization` at inference, for the modes classifiers use."""

    vocabulary: Sequence[str]  # with the special tokens, as get_vocabulary() lists them
    standardize: str | None = "lower_and_strip_punctuation"
    split: str | None = "whitespace"
    ngrams: tuple[int, ...] = ()
    output_mode: str = "int"
    sequence_length: int | None = None  # int mode: pad or cut to this (None: the longest)
    width: int | None = None  # multi_hot/count: vector length (pad_to_max_tokens)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _choice("standardize", self.standardize, STANDARDIZE)
        _choice("split", self.split, SPLIT)
        _choice("output_mode", self.output_mode, OUTPUT_MODES)
        index: dict[str, int] = {}
        for i, token in enumerate(self.vocabulary):
            index.setdefault(token, i)
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_layer_config(cls, config: Mapping[str, Any], assets: Sequence[str]) -> Vectorizer:
        """The layer as its `get_config()` and its saved vocabulary (`assets`, the lines of
        its vocabulary.txt; empty when the vocabulary is inline in the config) describe it."""
        mode = str(config.get("output_mode", "int"))
        if mode not in OUTPUT_MODES:
            raise _unsupported(f"output_mode={mode!r} (supported: {', '.join(OUTPUT_MODES)})")
        for name in ("standardize", "split"):
            value = config.get(name)
            if value is not None and not isinstance(value, str):
                raise _unsupported(f"a custom {name} function")
        inline = config.get("vocabulary")
        tokens = [str(t) for t in inline] if isinstance(inline, list) else list(assets)
        if not tokens:
            raise _unsupported("no vocabulary (the layer was never adapted)")
        width = None
        if mode != "int" and config.get("pad_to_max_tokens") and config.get("max_tokens"):
            width = int(config["max_tokens"])
        length = config.get("output_sequence_length")
        return cls(
            vocabulary=with_special_tokens(tokens, mode),
            standardize=config.get("standardize", "lower_and_strip_punctuation"),
            split=config.get("split", "whitespace"),
            ngrams=_ngrams(config.get("ngrams")),
            output_mode=mode,
            sequence_length=int(length) if isinstance(length, int) else None,
            width=width,
        )

    def tokens(self, text: str) -> list[str]:
        if self.standardize in ("lower", "lower_and_strip_punctuation"):
            text = text.translate(_ASCII_LOWER)
        if self.standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
            text = PUNCTUATION.sub("", text)
        if self.split == "whitespace":
            words = [w for w in WHITESPACE.split(text) if w]
        elif self.split == "character":
            words = list(text)
        else:
            words = [text]
        if not self.ngrams:
            return words
        return [" ".join(words[i : i + n]) for n in self.ngrams for i in range(len(words) - n + 1)]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(self.tokens(text))) for text in texts]

    def encode(self, texts: Sequence[str]) -> npt.NDArray[Any]:
        oov = self._index.get(OOV_TOKEN, 1 if self.output_mode == "int" else 0)
        rows = [[self._index.get(t, oov) for t in self.tokens(text)] for text in texts]
        if self.output_mode == "int":
            return pad(rows, self.sequence_length, padding="post", truncating="post")
        width = self.width or len(self.vocabulary)
        vectors = np.zeros((len(rows), width), dtype=np.float32)
        for row, ids in zip(vectors, rows, strict=True):
            np.add.at(row, [i for i in ids if i < width], 1.0)
        if self.output_mode == "multi_hot":
            np.minimum(vectors, 1.0, out=vectors)
        return vectors


@dataclass(frozen=True, slots=True)
class KerasTokenizer:
    """`keras.preprocessing.text.Tokenizer.texts_to_sequences`, then `pad_sequences`."""

    word_index: Mapping[str, int]
    num_words: int | None = None
    filters: str = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
    lower: bool = True
    split: str = " "
    char_level: bool = False
    oov_token: str | None = None
    sequence_length: int | None = None
    padding: str = "pre"  # pad_sequences' defaults
    truncating: str = "pre"

    @classmethod
    def from_json(
        cls, text: str, *, sequence_length: int | None, padding: str, truncating: str
    ) -> KerasTokenizer:
        try:
            data = json.loads(text)
            config = data["config"]
            word_index = config["word_index"]
            if isinstance(word_index, str):  # to_json() nests it as a JSON string
                word_index = json.loads(word_index)
            if data.get("class_name") != "Tokenizer" or not isinstance(word_index, dict):
                raise ValueError("not a keras Tokenizer")
        except (ValueError, KeyError, TypeError) as exc:
            raise UnsupportedSource(
                "tokenizer.json is not the JSON of a keras.preprocessing.text.Tokenizer "
                f"(tokenizer.to_json()): {exc}",
                param="file",
            ) from exc
        _choice("padding", padding, PADDING)
        _choice("truncating", truncating, PADDING)
        return cls(
            word_index={str(k): int(v) for k, v in word_index.items()},
            num_words=config.get("num_words"),
            filters=str(config.get("filters") or ""),
            lower=bool(config.get("lower", True)),
            split=str(config.get("split") or " "),
            char_level=bool(config.get("char_level", False)),
            oov_token=config.get("oov_token"),
            sequence_length=sequence_length,
            padding=padding,
            truncating=truncating,
        )

    def words(self, text: str) -> list[str]:
        if self.lower:
            text = text.lower()
        if self.char_level:
            return list(text)
        separators: dict[str, str | int | None] = {c: self.split for c in self.filters}
        text = text.translate(str.maketrans(separators))
        return [w for w in text.split(self.split) if w]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(self.words(text))) for text in texts]

    def sequence(self, text: str) -> list[int]:
        oov = self.word_index.get(self.oov_token) if self.oov_token is not None else None
        ids: list[int] = []
        for word in self.words(text):
            i = self.word_index.get(word)
            if i is not None and (not self.num_words or i < self.num_words):
                ids.append(i)
            elif oov is not None:
                ids.append(oov)
        return ids

    def encode(self, texts: Sequence[str]) -> npt.NDArray[Any]:
        rows = [self.sequence(text) for text in texts]
        return pad(rows, self.sequence_length, padding=self.padding, truncating=self.truncating)


def pad(
    rows: Sequence[Sequence[int]], length: int | None, *, padding: str, truncating: str
) -> IntArray:
    """`keras.utils.pad_sequences` with value 0 (length None: the longest row, at least 1)."""
    width = length if length is not None else max([1, *(len(r) for r in rows)])
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        kept = row[-width:] if truncating == "pre" else row[:width]
        if not kept:
            continue
        if padding == "pre":
            out[i, width - len(kept) :] = kept
        else:
            out[i, : len(kept)] = kept
    return out


def with_special_tokens(tokens: Sequence[str], output_mode: str) -> list[str]:
    """The vocabulary as the layer indexes it: int mode reserves 0 for padding and 1 for
    unknown words, the other modes 0 for unknown words (IndexLookup's rules)."""
    words = list(tokens)
    while words and words[0] in (MASK_TOKEN, OOV_TOKEN):
        words.pop(0)
    special = [MASK_TOKEN, OOV_TOKEN] if output_mode == "int" else [OOV_TOKEN]
    return special + words


def vocabulary_lines(text: str) -> list[str]:
    """A vocabulary file's tokens (Keras's load_assets: trailing empty lines dropped)."""
    lines = text.splitlines()
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _ngrams(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return tuple(range(1, value + 1))
    if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise _unsupported(f"ngrams={value!r}")


def _choice(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise _unsupported(f"{name}={value!r} (supported: {shown})")


def _unsupported(what: str) -> UnsupportedSource:
    return UnsupportedSource(
        f"the model's text preprocessing uses {what}, which this server does not reproduce",
        param="file",
    )
