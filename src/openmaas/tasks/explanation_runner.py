"""Running one explanation on a loaded model, in the model's thread: resolve the label (and,
for a tagger, the entity) as the model predicts it, then attribute with the item's method
and sum the attributions into the words of the input.

A classifier's label scores its probability from `classify`; a tagger's, the score of the
entity of that type over the explained characters in `extract_entities` (0 when the model
no longer finds one there), so occlusion works through either task's normal scoring.

Example::

    item = EXPLANATION.check(model, "a gripping film", ExplainParams(), "sentiment:1")
    explanation = explain(model, item)
    explanation.label, [w.score for w in explanation.words]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from openmaas.errors import InvalidRequest
from openmaas.tasks.explanation import (
    INTEGRATED_GRADIENTS,
    ExplainItem,
    Explanation,
    GradientExplainer,
    Target,
    WordScore,
    is_tagger,
)
from openmaas.tasks.explanation_words import delete_words, shifted_span, words_of_tokens
from openmaas.tasks.occlusion import occlusion
from openmaas.tasks.token_classification import Entity

# A scorer of texts for the explained label; the span, for a tagger, moves as words go.
Scorer = Callable[[Sequence[tuple[str, tuple[int, int] | None]]], list[float]]


def explain(model: Any, item: ExplainItem) -> Explanation:
    if is_tagger(model):
        target, score, scorer = _tagger_target(model, item)
    else:
        target, score, scorer = _classifier_target(model, item)
    if item.method == INTEGRATED_GRADIENTS:
        assert isinstance(model, GradientExplainer)  # checked with the request
        tokens = model.attribute_tokens(item.text, target, item.steps)
        scores = words_of_tokens(item.words, tokens.offsets, tokens.scores)
        passes, delta = item.steps, tokens.delta
    else:
        words = item.words

        def without(i: int) -> tuple[str, tuple[int, int] | None]:
            text = delete_words(item.text, words, [i])
            return text, None if target.span is None else shifted_span(target.span, words, [i])

        scores = occlusion(parts=len(words), without=without, score=scorer, full_score=score)
        passes, delta = len(words) + 1, None
    return Explanation(
        method=item.method,
        label=target.label,
        score=score,
        words=tuple(
            WordScore(w.text, w.start, w.end, float(s))
            for w, s in zip(item.words, scores, strict=True)
        ),
        span=target.span,
        passes=passes,
        delta=delta,
    )


def _classifier_target(model: Any, item: ExplainItem) -> tuple[Target, float, Scorer]:
    ranking = model.classify([item.text])[0]
    label = item.target if item.target is not None else ranking[0].label

    def scorer(inputs: Sequence[tuple[str, tuple[int, int] | None]]) -> list[float]:
        rankings = model.classify([text for text, _ in inputs])
        return [_label_score(r, label) for r in rankings]

    return Target(label), _label_score(ranking, label), scorer


def _label_score(ranking: Sequence[Any], label: str) -> float:
    return next((float(s.score) for s in ranking if s.label == label), 0.0)


def _tagger_target(model: Any, item: ExplainItem) -> tuple[Target, float, Scorer]:
    entities: list[Entity] = model.extract_entities([item.text])[0]
    candidates = [
        e
        for e in entities
        if (item.target is None or e.label == item.target)
        and (item.span is None or _overlaps(e, item.span))
    ]
    best = max(candidates, key=lambda e: e.score or 0.0, default=None)
    if best is not None:
        label, span = best.label, item.span or (best.start, best.end)
    elif item.target is not None and item.span is not None:
        label, span = item.target, item.span  # explain why the model finds no such entity
    else:
        what = f"{item.target} entity" if item.target else "entity"
        where = f" at [{item.span[0]}, {item.span[1]}]" if item.span else ""
        raise InvalidRequest(
            f"the model finds no {what}{where} in the input: name both target (an entity "
            "type) and span (its characters) to explain why",
            param="target" if item.span else "span",
        )

    def scorer(inputs: Sequence[tuple[str, tuple[int, int] | None]]) -> list[float]:
        found = model.extract_entities([text for text, _ in inputs])
        return [
            _entity_score(row, label, moved or span)
            for row, (_, moved) in zip(found, inputs, strict=True)
        ]

    return Target(label, span), _entity_score(entities, label, span), scorer


def _overlaps(entity: Entity, span: tuple[int, int]) -> bool:
    return entity.start < span[1] and entity.end > span[0]


def _entity_score(entities: Sequence[Entity], label: str, span: tuple[int, int]) -> float:
    if span[0] >= span[1]:
        return 0.0  # every character of the entity was deleted
    scores = [e.score or 1.0 for e in entities if e.label == label and _overlaps(e, span)]
    return max(scores, default=0.0)
