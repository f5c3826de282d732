"""Scoring a loaded model on labelled examples, synchronously: `score(model, task, examples)`.

- text classification (`{"text", "label"}` examples): the model's top label against the true
  one: accuracy, macro and micro precision/recall/F1, weighted F1, the per-class report and
  confusion matrix (`training.metrics`), and the expected calibration error of its top
  probability (`evaluation.calibration`, 15 bins); the worst examples are those that gave the
  true label the lowest probability (0 for a label the model does not know);
- token classification (`{"tokens", "tags"}` examples, BIO or BIOES tags): the tokens joined
  by single spaces are sent as the text, the entities the model finds are mapped back onto
  the tokens they overlap (the first B-, the rest I-), and scored at the entity level as
  conlleval does (`training.ner_metrics`): precision, recall and F1 overall and per type, and
  token accuracy; the worst sentences are those with the lowest entity F1 (most errors first
  among equals), sentences without an error left out.

Examples are sent to the model `batch_size` at a time; `on_batch(done)` is called after each
batch (a job reports progress and stops there). Classifier scores are read as probabilities:
a model whose scores are not (independent sigmoids) has a calibration error that says so.

Example::

    model = get_runtime("rules").load(source, LoadOptions(device="cpu"))
    report = score(model, "text-classification", [{"text": "I love it", "label": "positive"}])
    report.metrics["accuracy"], report.metrics["ece"], report.confusion_matrix
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from openmaas.errors import InvalidRequest
from openmaas.evaluation.calibration import expected_calibration_error
from openmaas.evaluation.report import ClassScores, EntityMention, EvaluationReport, WorstExample
from openmaas.runtimes.base import LoadedModel
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import Classifier, LabelScore
from openmaas.tasks.token_classification import Entity, EntityExtractor
from openmaas.training.metrics import classification_metrics
from openmaas.training.ner_metrics import OUTSIDE, entity_metrics, entity_spans

# The tasks an evaluation scores, and the example fields each reads.
EVALUATED_TASKS: Mapping[str, tuple[str, ...]] = {
    Task.TEXT_CLASSIFICATION.value: ("text", "label"),
    Task.TOKEN_CLASSIFICATION.value: ("tokens", "tags"),
}
BATCH_SIZE = 64  # examples per call of the model
MAX_WORST = 20  # worst examples a report keeps
TEXT_CHARS = 200  # a worst example's text is cut to this many characters

OnBatch = Callable[[int], None]  # called with the number of examples scored so far


def check_task(task: str, *, param: str = "model") -> None:
    """400 naming `param` when `task` cannot be evaluated, with the tasks that can."""
    if task not in EVALUATED_TASKS:
        raise InvalidRequest(
            f"{task} models cannot be evaluated; evaluations score "
            f"{' and '.join(EVALUATED_TASKS)} models",
            param=param,
            code="task_not_evaluable",
        )


def score(
    model: LoadedModel,
    task: str,
    examples: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = BATCH_SIZE,
    max_worst: int = MAX_WORST,
    on_batch: OnBatch | None = None,
) -> EvaluationReport:
    """Score `model` on `examples` of `task` (see the module's docstring)."""
    check_task(task)
    if task not in model.tasks:
        raise model.wrong_task(task)
    if not examples:
        raise InvalidRequest("the file holds no examples to evaluate on", param="file")
    if task == Task.TEXT_CLASSIFICATION:
        return _score_classifier(model, examples, batch_size, max_worst, on_batch)
    return _score_tagger(model, examples, batch_size, max_worst, on_batch)


# -- text classification --------------------------------------------------------------------


def _score_classifier(
    model: LoadedModel,
    examples: Sequence[Mapping[str, Any]],
    batch_size: int,
    max_worst: int,
    on_batch: OnBatch | None,
) -> EvaluationReport:
    classifier = cast(Classifier, model)
    texts = [str(example["text"]) for example in examples]
    truth = [str(example["label"]) for example in examples]
    answers: list[list[LabelScore]] = []
    for start in range(0, len(texts), batch_size):
        answers.extend(classifier.classify(texts[start : start + batch_size]))
        if on_batch is not None:
            on_batch(len(answers))
    predicted = [ranked[0].label if ranked else "" for ranked in answers]
    confidence = [ranked[0].score if ranked else 0.0 for ranked in answers]
    true_scores = [
        next((item.score for item in ranked if item.label == label), 0.0)
        for ranked, label in zip(answers, truth, strict=True)
    ]
    labels = _label_order(getattr(model, "labels", ()), truth, predicted)
    index = {label: i for i, label in enumerate(labels)}
    metrics = classification_metrics(
        [index[label] for label in truth], [index[label] for label in predicted], labels
    )
    calibration = expected_calibration_error(
        confidence, [p == t for p, t in zip(predicted, truth, strict=True)]
    )
    worst_order = sorted(range(len(texts)), key=lambda i: (true_scores[i], i))[:max_worst]
    return EvaluationReport(
        task=Task.TEXT_CLASSIFICATION.value,
        model=model.source.label,
        n_examples=len(texts),
        metrics={**metrics.summary(), "ece": calibration.ece},
        labels=tuple(labels),
        per_class=tuple(
            ClassScores(
                label=c.label,
                precision=c.precision,
                recall=c.recall,
                f1=c.f1,
                support=c.support,
                predicted=sum(row[i] for row in metrics.confusion),
            )
            for i, c in enumerate(metrics.per_class)
        ),
        confusion_matrix=metrics.confusion,
        calibration=calibration,
        worst_examples=tuple(
            WorstExample(
                index=i,
                text=_cut(texts[i]),
                score=true_scores[i],
                label=truth[i],
                predicted=predicted[i],
                predicted_score=confidence[i],
            )
            for i in worst_order
        ),
    )


def _label_order(
    model_labels: Sequence[str], truth: Sequence[str], predicted: Sequence[str]
) -> list[str]:
    """The labels that occur (true or predicted): in the model's order, then the true labels
    the model does not know, sorted. A model with hundreds of labels (a language
    identifier) gets a matrix of the labels the file and its answers use, not all of them."""
    seen = set(truth) | set(predicted)
    ordered = [label for label in dict.fromkeys(model_labels) if label in seen]
    known = set(ordered)
    return ordered + sorted(seen - known)


# -- token classification -------------------------------------------------------------------


def _score_tagger(
    model: LoadedModel,
    examples: Sequence[Mapping[str, Any]],
    batch_size: int,
    max_worst: int,
    on_batch: OnBatch | None,
) -> EvaluationReport:
    tagger = cast(EntityExtractor, model)
    sentences = [[str(token) for token in example["tokens"]] for example in examples]
    truth = [[str(tag) for tag in example["tags"]] for example in examples]
    texts = [" ".join(tokens) for tokens in sentences]
    found: list[list[Entity]] = []
    for start in range(0, len(texts), batch_size):
        found.extend(tagger.extract_entities(texts[start : start + batch_size]))
        if on_batch is not None:
            on_batch(len(found))
    predicted = [
        tags_of(tokens, entities) for tokens, entities in zip(sentences, found, strict=True)
    ]
    try:
        metrics = entity_metrics(truth, predicted)
        worst = _worst_sentences(sentences, texts, truth, predicted, max_worst)
    except ValueError as exc:
        raise InvalidRequest(f"the file's tags cannot be scored: {exc}", param="file") from None
    per_type = tuple(
        ClassScores(
            label=t.label,
            precision=t.precision,
            recall=t.recall,
            f1=t.f1,
            support=t.support,
            predicted=t.predicted,
        )
        for t in metrics.per_type
    )
    return EvaluationReport(
        task=Task.TOKEN_CLASSIFICATION.value,
        model=model.source.label,
        n_examples=len(texts),
        metrics={
            "entity_precision": metrics.precision,
            "entity_recall": metrics.recall,
            "entity_f1": metrics.f1,
            "token_accuracy": metrics.accuracy,
        },
        labels=tuple(t.label for t in per_type),
        per_class=per_type,
        worst_examples=worst,
    )


def token_offsets(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Each token's character span in `" ".join(tokens)`."""
    spans = []
    position = 0
    for token in tokens:
        spans.append((position, position + len(token)))
        position += len(token) + 1
    return spans


def tags_of(tokens: Sequence[str], entities: Sequence[Entity]) -> list[str]:
    """BIO tags for `tokens` from entities found in their space-joined text: each entity
    tags the tokens it overlaps (B- on the first); a token an earlier entity took keeps its
    tag."""
    tags = [OUTSIDE] * len(tokens)
    offsets = token_offsets(tokens)
    for entity in sorted(entities, key=lambda e: (e.start, e.end)):
        covered = [
            i
            for i, (start, end) in enumerate(offsets)
            if start < entity.end and entity.start < end and tags[i] == OUTSIDE
        ]
        for position, i in enumerate(covered):
            tags[i] = f"{'B' if position == 0 else 'I'}-{entity.label}"
    return tags


def _worst_sentences(
    sentences: Sequence[Sequence[str]],
    texts: Sequence[str],
    truth: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    max_worst: int,
) -> tuple[WorstExample, ...]:
    scored = []
    for i, (true_tags, predicted_tags) in enumerate(zip(truth, predicted, strict=True)):
        expected, got = set(entity_spans(true_tags)), set(entity_spans(predicted_tags))
        correct = len(expected & got)
        errors = len(expected) + len(got) - 2 * correct
        if errors == 0:
            continue
        total = len(expected) + len(got)
        f1 = 2 * correct / total if total else 1.0
        scored.append((f1, -errors, i))
    scored.sort()

    def mentions(tokens: Sequence[str], tags: Sequence[str]) -> tuple[EntityMention, ...]:
        return tuple(
            EntityMention(" ".join(tokens[span.start : span.end]), span.label)
            for span in entity_spans(tags)
        )

    return tuple(
        WorstExample(
            index=i,
            text=_cut(texts[i]),
            score=f1,
            expected_entities=mentions(sentences[i], truth[i]),
            predicted_entities=mentions(sentences[i], predicted[i]),
        )
        for f1, _, i in scored[:max_worst]
    )


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"
