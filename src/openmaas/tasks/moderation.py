"""Moderation over a text classifier: its labels mapped onto OpenAI's 13 moderation categories.

A label maps onto the categories the version's `moderation_categories` param names for it
(recorded with the version at registration: `{"label": ["category", ...]}`, `[]` for a label
that is no category); labels it does not name use the defaults below, which cover the usual
toxicity label sets (Jigsaw / Detoxify, KoalaAI's moderation codes, offensive and hate speech
detectors, and OpenAI's own category names). A category scores the highest score of the
labels mapped onto it (0 when none is) and is flagged from `FLAG_THRESHOLD`. Labels that mean
"nothing wrong" (`SAFE_LABELS`) are no category and never flag.

Example::

    mapping = CategoryMapping.for_version({"moderation_categories": {"spam": []}})
    verdict = mapping.judge([LabelScore("toxic", 0.9), LabelScore("non-toxic", 0.1)])
    verdict.category_scores["harassment"]  # -> 0.9
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openmaas.errors import InvalidRequest
from openmaas.tasks.text_classification import LabelScore

PARAM = "moderation_categories"
FLAG_THRESHOLD = 0.5

# OpenAI's categories, in the order its API reference lists them.
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

SAFE_LABELS = frozenset(
    {"safe", "ok", "clean", "neutral", "normal", "none", "non-toxic", "non_toxic", "not_toxic",
     "nontoxic", "harmless", "benign", "acceptable", "label_0", "0", "negative_class",
     "not-offensive", "not_offensive", "non-offensive", "not-hate", "not_hate", "nothate",
     "non-hate", "neither", "ham"}
)  # fmt: skip

DEFAULT_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    # OpenAI's own names (a classifier trained on its categories), also with _ for / and -
    **{category: (category,) for category in CATEGORIES},
    # Jigsaw toxic comments and Detoxify (unitary/toxic-bert and its kin)
    "toxic": ("harassment",),
    "toxicity": ("harassment",),
    "severe_toxic": ("harassment",),
    "severe_toxicity": ("harassment",),
    "obscene": ("harassment",),
    "insult": ("harassment",),
    "threat": ("harassment/threatening", "violence"),
    "identity_hate": ("hate",),
    "identity_attack": ("hate",),
    "sexual_explicit": ("sexual",),
    # KoalaAI/Text-Moderation's codes (OpenAI's older taxonomy)
    "s": ("sexual",),
    "h": ("hate",),
    "v": ("violence",),
    "hr": ("harassment",),
    "sh": ("self-harm",),
    "s3": ("sexual/minors",),
    "h2": ("hate/threatening",),
    "v2": ("violence/graphic",),
    # offensive-language, hate-speech and NSFW detectors
    "offensive": ("harassment",),
    "abusive": ("harassment",),
    "hateful": ("hate",),
    "hate_speech": ("hate",),
    "nsfw": ("sexual",),
    "violent": ("violence",),
    "suicide": ("self-harm",),
}


def _key(label: str) -> str:
    """Labels compare case-blind, with `_` for `/`, `-` and spaces (`Self-Harm` = `self_harm`)."""
    text = label.strip().lower()
    for separator in ("/", "-", " "):
        text = text.replace(separator, "_")
    return text


_DEFAULTS = {_key(label): categories for label, categories in DEFAULT_CATEGORIES.items()}
_SAFE = frozenset(_key(label) for label in SAFE_LABELS)


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    # the classifier's own labels (but the "nothing wrong" ones), as it named them
    label_flags: dict[str, bool]
    label_scores: dict[str, float]


@dataclass(frozen=True, slots=True)
class CategoryMapping:
    overrides: Mapping[str, tuple[str, ...]]  # by _key(label)

    @staticmethod
    def for_version(params: Mapping[str, Any]) -> CategoryMapping:
        given = check_params(params)
        return CategoryMapping({_key(label): cats for label, cats in given.items()})

    def categories_of(self, label: str) -> tuple[str, ...]:
        key = _key(label)
        if key in self.overrides:
            return self.overrides[key]
        return () if key in _SAFE else _DEFAULTS.get(key, ())

    def is_safe(self, label: str) -> bool:
        return _key(label) in _SAFE and _key(label) not in self.overrides

    def judge(self, ranking: Sequence[LabelScore]) -> Verdict:
        """One input's verdict. `flagged` is the classifier's own: any of its labels (but the
        "nothing wrong" ones) at or above the threshold, mapped onto a category or not."""
        scores = dict.fromkeys(CATEGORIES, 0.0)
        labels: dict[str, float] = {}
        for item in ranking:
            if self.is_safe(item.label):
                continue
            labels[item.label] = item.score
            for category in self.categories_of(item.label):
                scores[category] = max(scores[category], item.score)
        label_flags = {label: score >= FLAG_THRESHOLD for label, score in labels.items()}
        return Verdict(
            flagged=any(label_flags.values()),
            categories={c: s >= FLAG_THRESHOLD for c, s in scores.items()},
            category_scores=scores,
            label_flags=label_flags,
            label_scores=labels,
        )


def check_params(params: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The version's `moderation_categories` param, checked (400 naming the problem)."""
    given = params.get(PARAM)
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise InvalidRequest(
            f"params.{PARAM} must map each label to a list of OpenAI moderation categories",
            param=f"params.{PARAM}",
        )
    mapping: dict[str, tuple[str, ...]] = {}
    for label, categories in given.items():
        names = [categories] if isinstance(categories, str) else categories
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidRequest(
                f"params.{PARAM}[{label!r}] must be a category or a list of categories",
                param=f"params.{PARAM}",
            )
        unknown = [n for n in names if n not in CATEGORIES]
        if unknown:
            raise InvalidRequest(
                f"params.{PARAM}[{label!r}]: {', '.join(map(repr, unknown))} is not an OpenAI "
                f"moderation category; use {', '.join(CATEGORIES)}",
                param=f"params.{PARAM}",
            )
        mapping[str(label)] = tuple(dict.fromkeys(names))
    return mapping
