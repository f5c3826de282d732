"""The word tokenizer of word-vector models, shared by training and serving so that a text is
cut into the same words on both sides.

`words-1`, the only one so far: Unicode NFKC, lowercase, the typographic apostrophe (U+2019)
read as `'`, then every run of letters and digits is a word, with apostrophes kept inside one
("don't", "o'brien"). Everything else (spaces, punctuation, symbols, underscores) separates
words and is dropped, so "3.14" gives "3" and "14" and "south-west" gives "south" and "west".

Models record the tokenizer by name and options (`to_dict`), never as a pattern: a model file
cannot make the server compile a regular expression of its choosing.

Example::

    tokenizer = WordTokenizer()
    tokenizer.words("Don\u2019t PANIC, Arthur: 42!")  # ["don't", "panic", "arthur", "42"]
    WordTokenizer.from_dict(tokenizer.to_dict()) == tokenizer  # True
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NAME = "words-1"
# `[^\W_]` is a letter or a digit in any script (`\w` without the underscore).
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
TYPOGRAPHIC_APOSTROPHE = "\u2019"


@dataclass(frozen=True, slots=True)
class WordTokenizer:
    """Cuts texts into words; `lowercase=False` keeps case (then "Paris" and "paris" are two
    words with two vectors)."""

    name: str = NAME
    lowercase: bool = True

    def words(self, text: str) -> list[str]:
        normalized = unicodedata.normalize("NFKC", text).replace(TYPOGRAPHIC_APOSTROPHE, "'")
        if self.lowercase:
            normalized = normalized.lower()
        return WORD.findall(normalized)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lowercase": self.lowercase, "normalization": "NFKC"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WordTokenizer:
        """The tokenizer a model recorded; ValueError for one this server does not know."""
        name = data.get("name")
        if name != NAME:
            raise ValueError(f"unknown word tokenizer {name!r} (this server has {NAME!r})")
        lowercase = data.get("lowercase", True)
        if not isinstance(lowercase, bool):
            raise ValueError(
                f"tokenizer option 'lowercase' must be true or false, not {lowercase!r}"
            )
        return cls(name=NAME, lowercase=lowercase)
