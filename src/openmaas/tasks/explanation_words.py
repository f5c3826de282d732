"""Words as the user wrote them, for explanations: the input cut into words and punctuation
with character offsets, model tokens (subword pieces, word-level ids) summed into the words
they cover, and a text with some of its words deleted (what occlusion scores).

A word is a run of letters and digits, apostrophes inside it included ("don't", "n't"), or a
run of punctuation; whitespace separates and belongs to no word. Every model's tokens carry
character offsets into the same text, so attributions of any tokenizer land on the same
words.

Example::

    words = split_words("Not bad at all!")
    [w.text for w in words]  # -> ["Not", "bad", "at", "all", "!"]
    words_of_tokens(words, [(0, 3), (4, 7), (0, 0)], [0.5, 0.25, 0.1])  # -> [0.5, 0.25, 0, 0, 0]
    delete_words("Not bad at all!", words, [1])  # -> "Not  at all!"
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*|[^\w\s]+|_+")


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: int  # character offsets into the input, end exclusive
    end: int


def split_words(text: str) -> list[Word]:
    return [Word(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def words_of_tokens(
    words: Sequence[Word], offsets: Sequence[tuple[int, int]], scores: Sequence[float]
) -> list[float]:
    """Each word's share of the token scores: a token's score goes to the words its
    characters overlap, split evenly when it covers several (a tokenizer that keeps "film."
    whole); tokens with empty offsets ([CLS], padding) go nowhere."""
    starts = [w.start for w in words]
    totals = [0.0] * len(words)
    for (start, end), score in zip(offsets, scores, strict=True):
        if end <= start:
            continue
        first = max(0, bisect.bisect_right(starts, start) - 1)
        covered = [
            i
            for i in range(first, bisect.bisect_left(starts, end))
            if words[i].start < end and words[i].end > start
        ]
        for i in covered:
            totals[i] += score / len(covered)
    return totals


def delete_words(text: str, words: Sequence[Word], deleted: Sequence[int]) -> str:
    """The text without the characters of the deleted words (whitespace kept)."""
    gone = sorted(set(deleted))
    pieces, position = [], 0
    for i in gone:
        pieces.append(text[position : words[i].start])
        position = words[i].end
    pieces.append(text[position:])
    return "".join(pieces)


def shifted_span(
    span: tuple[int, int], words: Sequence[Word], deleted: Sequence[int]
) -> tuple[int, int]:
    """Where the characters of `span` are once `deleted` words are gone (`delete_words`);
    an empty span when every character of it was deleted."""

    def moved(position: int) -> int:
        shift = 0
        for i in deleted:
            word = words[i]
            if word.end <= position:
                shift += word.end - word.start
            elif word.start < position:
                shift += position - word.start
        return position - shift

    return moved(span[0]), moved(span[1])
