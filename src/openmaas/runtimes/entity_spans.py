"""Entity spans from tagged tokens: what every runtime that serves token classification
shares (the transformers runtime over subwords, the openmaas-nn tagger over words). Tags may
be BIO / IOB2, BIOES, BILOU or plain labels; offsets are characters of the input text.

Example::

    tokens = [TaggedToken(0, 0, 6, "B-PER", 0.9), TaggedToken(1, 7, 13, "I-PER", 0.8)]
    group_entities("Angela Merkel", tokens)
    # [Entity(text='Angela Merkel', label='PER', start=0, end=13, score=0.85)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from openmaas.tasks.token_classification import Entity

# Tag prefixes of the BIO / IOB2, BIOES and BILOU schemes.
BEGIN_TAGS = frozenset({"B", "S", "U"})
INSIDE_TAGS = frozenset({"I", "E", "L"})
ENDING_TAGS = frozenset({"E", "L", "S", "U"})  # the entity is complete after this word
OUTSIDE_LABELS = frozenset({"O", "OUTSIDE"})


@dataclass(frozen=True, slots=True)
class TaggedToken:
    """One subword with its predicted label; `word` groups subwords into words."""

    word: int
    start: int  # character offsets into the text
    end: int
    label: str
    score: float  # the predicted label's probability


@dataclass(slots=True)
class _Word:
    start: int
    end: int
    label: str  # the first subword's
    scores: list[float] = field(default_factory=list)


def parse_tag(label: str) -> tuple[str | None, str | None]:
    """("B", "PER") for "B-PER"; (None, "PER") for a plain "PER"; (None, None) for outside."""
    if label.upper() in OUTSIDE_LABELS:
        return None, None
    prefix, dash, kind = label.partition("-")
    if dash and kind and prefix.upper() in BEGIN_TAGS | INSIDE_TAGS:
        return prefix.upper(), kind
    return None, label


def group_entities(text: str, tokens: Sequence[TaggedToken]) -> list[Entity]:
    """Entity spans from tagged subwords: a word takes its first subword's label; a word tagged
    I-X (or E-X, L-X) extends an open X entity, as does a plain X after a plain X; B-X starts
    a new one. The score is the mean probability of the entity's tokens."""
    words: list[_Word] = []
    current_word: int | None = None
    for token in tokens:
        if token.word != current_word:
            words.append(_Word(token.start, token.end, token.label))
            current_word = token.word
        words[-1].end = max(words[-1].end, token.end)
        words[-1].scores.append(token.score)

    groups: list[tuple[str, list[_Word]]] = []
    open_kind: str | None = None
    open_plain = False
    for word in words:
        position, kind = parse_tag(word.label)
        if kind is None:
            open_kind = None
            continue
        continues = kind == open_kind and (
            position in INSIDE_TAGS or (position is None and open_plain)
        )
        if continues:
            groups[-1][1].append(word)
        else:
            groups.append((kind, [word]))
            open_kind, open_plain = kind, position is None
        if position in ENDING_TAGS:
            open_kind = None
    return [entity for kind, group in groups if (entity := _entity(text, kind, group))]


def _entity(text: str, kind: str, words: list[_Word]) -> Entity | None:
    start, end = words[0].start, words[-1].end
    # Byte-level tokenizers count a word's leading space in its offsets.
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start >= end:
        return None
    scores = [score for word in words for score in word.scores]
    return Entity(
        text=text[start:end], label=kind, start=start, end=end, score=float(np.mean(scores))
    )
