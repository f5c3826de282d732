"""Explanations: which words of an input moved a model toward a label. `/v1/explain`.

A request names a text classifier or a tagger, one text, and optionally the label to explain
(`target`; default the predicted one), the method and, for a tagger, the characters of the
entity (`span`; default its most confident entity). The answer gives every word as written,
with offsets into the input and its score toward the label, the label's probability, and the
method used:

- `integrated-gradients` (Sundararajan et al. 2017, through Captum) for models that take
  gradients (`GradientExplainer`: the platform's torch networks, transformers checkpoints):
  the path integral of the gradient from an all-padding input to the text, at the word
  embeddings, summed per word. The scores add up to the label's probability at the text minus
  at the baseline, within `delta`.
- `occlusion` for any model: the probability lost when the word is deleted (`tasks.occlusion`),
  through the model's normal scoring.

The default is integrated gradients where the model supports them, else occlusion. The work
is one item of the model's batcher, in the model's thread, bounded by the server's caps on
words (`max_words`: occlusion's passes) and steps.

Image classifiers are explained by regions instead of words (`tasks.image_explanation`),
through the same occlusion core and methods.

Example::

    params = ExplainParams(target="positive")
    served = await engine.infer(EXPLANATION, "sentiment", "a gripping film", params, caller=who)
    [(w.text, round(w.score, 2)) for w in served.results[0].words]  # [('a', 0.0), ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from openmaas.errors import InputTooLarge, InvalidRequest
from openmaas.tasks.contract import Plan, TaskContract, wrong_task
from openmaas.tasks.explanation_words import Word, split_words
from openmaas.tasks.names import Task
from openmaas.tasks.text_input import TokenCounter, keep_text

INTEGRATED_GRADIENTS = "integrated-gradients"
OCCLUSION = "occlusion"
METHODS = (INTEGRATED_GRADIENTS, OCCLUSION)
CLASSIFIERS = frozenset({Task.TEXT_CLASSIFICATION.value})
TAGGERS = frozenset({Task.TOKEN_CLASSIFICATION.value})
# Labels named in an error message before "and N more".
LISTED_LABELS = 20
# Tag prefixes of the BIO / IOB2, BIOES and BILOU schemes (as runtimes.entity_spans reads them).
_TAG_PREFIXES = frozenset({"B", "I", "E", "S", "L", "U"})
_OUTSIDE = frozenset({"O", "OUTSIDE"})


@dataclass(frozen=True, slots=True)
class Target:
    """What a gradient is taken of: a classifier's label, or a tagger's entity type over the
    characters `span` of the text (the mean, over the tokens there, of the probability of
    the type's tags)."""

    label: str
    span: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class TokenAttributions:
    """Integrated gradients per model token: offsets into the text ((0, 0) for special
    tokens) and scores; `delta` is how far their sum is from the probability's rise from the
    baseline to the text (the integral's approximation error)."""

    offsets: tuple[tuple[int, int], ...]
    scores: tuple[float, ...]
    delta: float


@runtime_checkable
class GradientExplainer(Protocol):
    """A model that can attribute with integrated gradients (its network is torch)."""

    # False for a loaded model that has no gradients after all (an exported graph).
    explains_with_gradients: bool

    def attribute_tokens(self, text: str, target: Target, steps: int) -> TokenAttributions: ...


@runtime_checkable
class Explainable(TokenCounter, Protocol):
    """What the contract needs of every model: the tasks it serves (a classifier's or a
    tagger's protocol does the rest)."""


@dataclass(frozen=True, slots=True)
class ExplainParams:
    method: str | None = None  # None: integrated gradients where the model supports them
    target: str | None = None  # a label (a tagger: an entity type); None: the predicted one
    span: tuple[int, int] | None = None  # taggers: the characters of the entity explained
    steps: int = 32  # integrated gradients: points on the path from the baseline
    max_words: int = 256  # longest input, in words (occlusion's passes)


@dataclass(frozen=True, slots=True)
class WordScore:
    text: str
    start: int  # character offsets into the input, end exclusive
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class Explanation:
    method: str
    label: str
    score: float  # the model's probability of `label` for the input, as served
    words: tuple[WordScore, ...]
    span: tuple[int, int] | None  # taggers: the characters of the entity explained
    passes: int  # forward passes the explanation took
    delta: float | None  # integrated gradients: the approximation error (see TokenAttributions)


@dataclass(frozen=True, slots=True)
class ExplainItem:
    """One checked request, as the model's batcher runs it."""

    text: str
    words: tuple[Word, ...]
    method: str
    target: str | None
    span: tuple[int, int] | None
    steps: int


def tag_kind(tag: str) -> str | None:
    """The entity type of a tagger's label: "PER" for "B-PER" and for a plain "PER"; None
    for outside."""
    if tag.upper() in _OUTSIDE:
        return None
    prefix, dash, kind = tag.partition("-")
    if dash and kind and prefix.upper() in _TAG_PREFIXES:
        return kind
    return tag


def is_tagger(model: TokenCounter) -> bool:
    return bool(model.tasks & TAGGERS) and not model.tasks & CLASSIFIERS


def gradients_available(model: object) -> bool:
    return isinstance(model, GradientExplainer) and bool(model.explains_with_gradients)


def target_choices(model: Any) -> list[str]:
    """The labels a request may name: a classifier's, or a tagger's entity types."""
    labels: Sequence[str] = getattr(model, "labels", ())
    if not is_tagger(model):
        return list(labels)
    return list(dict.fromkeys(kind for tag in labels if (kind := tag_kind(tag)) is not None))


def listed(choices: Sequence[str]) -> str:
    shown = ", ".join(choices[:LISTED_LABELS])
    more = len(choices) - LISTED_LABELS
    return f"{shown} and {more} more" if more > 0 else shown


class ExplanationTask(TaskContract[str, ExplainParams, Explanation]):
    name = "explanation"
    protocol = Explainable
    served_by = CLASSIFIERS | TAGGERS

    def check_model(self, model: TokenCounter, label: str) -> None:
        if not model.tasks & self.servable_by():
            raise wrong_task(model, label, self.name)

    def plan(
        self, model: Any, inputs: str, params: ExplainParams, *, label: str, truncate: bool
    ) -> Plan:
        item = self.check(model, inputs, params, label)
        # Imported here: the runner imports this module's types.
        from openmaas.tasks.explanation_runner import explain

        return Plan(
            items=[item],
            run=lambda batch: [explain(model, one) for one in batch],
            key=self.name,
            truncate=truncate,
            counted=[inputs],
            one_at_a_time=True,
            normalize=keep_text,
        )

    def check(self, model: Any, text: str, params: ExplainParams, label: str) -> ExplainItem:
        """The request checked against the model, before it is queued (400s naming the field
        and the choices)."""
        method = params.method
        if method is not None and method not in METHODS:
            raise InvalidRequest(
                f"method '{method}' is not an explanation method; use {' or '.join(METHODS)}",
                param="method",
            )
        gradients = gradients_available(model)
        if method == INTEGRATED_GRADIENTS and not gradients:
            raise InvalidRequest(
                f"model '{label}' cannot be explained with {INTEGRATED_GRADIENTS}: its runtime "
                f"takes no gradients (ONNX graphs, spaCy, rule models, linear heads); use "
                f"{OCCLUSION}",
                param="method",
            )
        method = method or (INTEGRATED_GRADIENTS if gradients else OCCLUSION)
        choices = target_choices(model)
        if params.target is not None and params.target not in choices:
            raise InvalidRequest(
                f"target '{params.target}' is not a label of model '{label}'; use one of "
                f"{listed(choices)}",
                param="target",
            )
        tagger = is_tagger(model)
        if params.span is not None:
            start, end = params.span
            if not tagger:
                raise InvalidRequest(
                    f"span picks an entity of a token-classification model; model '{label}' "
                    "classifies whole texts: leave span out",
                    param="span",
                )
            if not 0 <= start < end <= len(text):
                raise InvalidRequest(
                    f"span [{start}, {end}] is not a range of the input's characters: give "
                    f"0 <= start < end <= {len(text)}",
                    param="span",
                )
        words = tuple(split_words(text))
        if not words:
            raise InvalidRequest("input has no words to explain", param="input")
        if len(words) > params.max_words:
            raise InputTooLarge(
                f"input has {len(words):,} words; explanations take at most "
                f"{params.max_words:,} (OPENMAAS_EXPLAIN_MAX_WORDS). Explain a shorter text",
                param="input",
            )
        return ExplainItem(text, words, method, params.target, params.span, params.steps)


EXPLANATION = ExplanationTask()
