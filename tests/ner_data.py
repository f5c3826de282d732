"""Small named-entity data for the tests: sentences built from templates and name lists (people,
places, organizations, several of them multi-word, one with inner punctuation: "U.S."), as
`{"tokens", "tags"}` examples with BIO tags or as CoNLL text. Deterministic for a seed, and
learnable in seconds by a tiny model.

Example::

    train = sentences(60, seed=0)
    Path("train.conll").write_text(conll(train))
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

PEOPLE = (
    ("Angela", "Merkel"),
    ("Barack", "Obama"),
    ("Marie", "Curie"),
    ("Ada", "Lovelace"),
    ("Nelson", "Mandela"),
    ("Pele",),
)
PLACES = (("Paris",), ("Berlin",), ("New", "York"), ("Tokyo",), ("Buenos", "Aires"), ("U.S.",))
ORGANIZATIONS = (("Siemens",), ("Deutsche", "Bank"), ("Reuters",), ("United", "Nations"))
DAYS = ("Monday", "Tuesday", "Friday")
# Templates: a word, or {PER}/{LOC}/{ORG}/{DAY} filled from the lists above.
TEMPLATES = (
    "{PER} visited {LOC} on {DAY} .",
    "{ORG} opened an office in {LOC} .",
    "{PER} said {ORG} would hire more staff .",
    "shares of {ORG} fell in {LOC} trading on {DAY} .",
    "{PER} met {PER} in {LOC} .",
    "the weather in {LOC} was mild on {DAY} .",
    "analysts expect {ORG} to report strong results .",
)
KINDS = {"{PER}": ("PER", PEOPLE), "{LOC}": ("LOC", PLACES), "{ORG}": ("ORG", ORGANIZATIONS)}

Example = dict[str, list[str]]


def sentence(template: str, rng: random.Random) -> Example:
    tokens: list[str] = []
    tags: list[str] = []
    for slot in template.split():
        if slot in KINDS:
            kind, names = KINDS[slot]
            name = rng.choice(names)
            tokens += name
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
        elif slot == "{DAY}":
            tokens.append(rng.choice(DAYS))
            tags.append("O")
        else:
            tokens.append(slot)
            tags.append("O")
    tokens[0] = tokens[0][0].upper() + tokens[0][1:]
    return {"tokens": tokens, "tags": tags}


def sentences(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return [sentence(TEMPLATES[i % len(TEMPLATES)], rng) for i in range(n)]


def conll(examples: Sequence[dict[str, Any]]) -> str:
    """CoNLL column text: `token tag` lines, a blank line after each sentence."""
    blocks = [
        "\n".join(f"{token} {tag}" for token, tag in zip(e["tokens"], e["tags"], strict=True))
        for e in examples
    ]
    return "\n\n".join(blocks) + "\n"
