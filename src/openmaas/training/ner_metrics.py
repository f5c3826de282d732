"""Entity-level metrics of a tagger: precision, recall and F1 over the entities that BIO tags
spell out, with a per-type report, and token accuracy beside them.

An entity counts as found only when a predicted entity has exactly its type, first token and
last token (the CoNLL shared tasks' rule); a partly right span is one false positive plus one
false negative. Entities are read from the tags as `conlleval` reads them: B-X opens an X
entity, I-X continues an open X entity, and an I-X after O, after the end of an entity or
after another type opens a new one (models predict such "broken" sequences; dropping their
entities would flatter them). E-X and S-X (BIOES) end an entity as conlleval and `seqeval`
treat them. Spans never cross sentences.

Precision, recall and F1 are micro averages over every entity (conlleval's overall line);
the per-type report gives each type's own, with its support (true entities) and how many
were predicted.

Example::

    metrics = entity_metrics(
        [["B-PER", "I-PER", "O", "B-LOC"]],
        [["B-PER", "I-PER", "O", "B-ORG"]],
    )
    metrics.summary()  # {"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.75}
    entity_spans(["O", "I-PER", "I-LOC"])  # [Span("PER", 1, 2), Span("LOC", 2, 3)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OUTSIDE = "O"
OPENING_PREFIXES = frozenset({"B", "S"})  # always start an entity
CLOSING_PREFIXES = frozenset({"E", "S"})  # the entity ends with this token
PREFIXES = frozenset({"B", "I", "E", "S"})


@dataclass(frozen=True, slots=True)
class Span:
    """An entity in one sentence: its type and token positions (`end` exclusive)."""

    label: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TypeReport:
    label: str
    precision: float
    recall: float
    f1: float
    support: int  # true entities of this type
    predicted: int  # predicted entities of this type


@dataclass(frozen=True, slots=True)
class EntityMetrics:
    precision: float
    recall: float
    f1: float
    accuracy: float  # tokens whose predicted tag is the true tag
    n_sentences: int
    n_tokens: int
    n_true: int  # entities in the true tags
    n_predicted: int
    n_correct: int
    per_type: tuple[TypeReport, ...]  # by type name

    def summary(self) -> dict[str, float]:
        """The scalar metrics, as registered with a model version."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "accuracy": self.accuracy,
        }

    def report(self) -> dict[str, Any]:
        """The counts and the per-type report, JSON-ready."""
        return {
            "n_sentences": self.n_sentences,
            "n_tokens": self.n_tokens,
            "entities": {
                "true": self.n_true,
                "predicted": self.n_predicted,
                "correct": self.n_correct,
            },
            "per_type": [
                {
                    "label": t.label,
                    "precision": t.precision,
                    "recall": t.recall,
                    "f1": t.f1,
                    "support": t.support,
                    "predicted": t.predicted,
                }
                for t in self.per_type
            ],
        }


def split_tag(tag: str) -> tuple[str, str | None]:
    """("B", "PER") for "B-PER", ("O", None) for "O". A tag that is neither is a ValueError:
    its entities would be a guess."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, dash, label = tag.partition("-")
    if not dash or not label or prefix not in PREFIXES:
        raise ValueError(f"tag {tag!r} is not O or B-, I-, E-, S- and an entity type")
    return prefix, label


def entity_spans(tags: Sequence[str]) -> list[Span]:
    """The entities of one sentence's tags, in order (see the module docstring)."""
    spans: list[Span] = []
    open_label: str | None = None
    start = 0
    for position, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        continues = (
            label is not None
            and label == open_label
            and prefix not in OPENING_PREFIXES  # I-X or E-X inside an open X entity
        )
        if open_label is not None and not continues:
            spans.append(Span(open_label, start, position))
            open_label = None
        if label is not None and not continues:
            open_label, start = label, position
        if open_label is not None and prefix in CLOSING_PREFIXES:
            spans.append(Span(open_label, start, position + 1))
            open_label = None
    if open_label is not None:
        spans.append(Span(open_label, start, len(tags)))
    return spans


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


def entity_metrics(
    true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> EntityMetrics:
    """Metrics of `predicted` against `true`: one tag sequence per sentence, of equal
    lengths. With no entity predicted precision is 0; with none true recall is 0."""
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true sentences but {len(predicted)} predicted")
    true_counts: Counter[str] = Counter()
    predicted_counts: Counter[str] = Counter()
    correct_counts: Counter[str] = Counter()
    n_tokens = right_tokens = 0
    for index, (true_tags, predicted_tags) in enumerate(zip(true, predicted, strict=True)):
        if len(true_tags) != len(predicted_tags):
            raise ValueError(
                f"sentence {index}: {len(true_tags)} true tags but {len(predicted_tags)} predicted"
            )
        true_spans = set(entity_spans(true_tags))
        predicted_spans = set(entity_spans(predicted_tags))
        true_counts.update(span.label for span in true_spans)
        predicted_counts.update(span.label for span in predicted_spans)
        correct_counts.update(span.label for span in true_spans & predicted_spans)
        n_tokens += len(true_tags)
        right_tokens += sum(t == p for t, p in zip(true_tags, predicted_tags, strict=True))

    per_type = []
    for label in sorted(set(true_counts) | set(predicted_counts)):
        precision = _ratio(correct_counts[label], predicted_counts[label])
        recall = _ratio(correct_counts[label], true_counts[label])
        per_type.append(
            TypeReport(
                label=label,
                precision=precision,
                recall=recall,
                f1=_f1(precision, recall),
                support=true_counts[label],
                predicted=predicted_counts[label],
            )
        )
    n_true, n_predicted = true_counts.total(), predicted_counts.total()
    n_correct = correct_counts.total()
    precision = _ratio(n_correct, n_predicted)
    recall = _ratio(n_correct, n_true)
    return EntityMetrics(
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        accuracy=_ratio(right_tokens, n_tokens),
        n_sentences=len(true),
        n_tokens=n_tokens,
        n_true=n_true,
        n_predicted=n_predicted,
        n_correct=n_correct,
        per_type=tuple(per_type),
    )
