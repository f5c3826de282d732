"""Evaluation scoring: the expected calibration error on inputs checked by hand; a classifier
and a tagger whose answers are fixed, so every metric and the order of the worst examples can
be worked out by hand; and `evaluate_reference` end to end on a real registry and dataset
service with the catalog's VADER, checked against VADER's own answers."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.catalog.service import CatalogService
from openmaas.datasets.service import DatasetService
from openmaas.errors import InvalidRequest, OpenMaaSError
from openmaas.evaluation import EVALUATED_TASKS, evaluate_reference, score
from openmaas.evaluation.calibration import expected_calibration_error
from openmaas.evaluation.report import EvaluationReport, deltas
from openmaas.evaluation.scoring import MAX_WORST, TEXT_CHARS, tags_of
from openmaas.registry.composition import Registry
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, get_runtime
from openmaas.tasks.text_classification import LabelScore, ranked
from openmaas.tasks.token_classification import Entity
from openmaas.training.ner_metrics import entity_spans
from openmaas.training.recipe import TrainingContext
from openmaas.training.recipes import RECIPES
from tests.conftest import build_registry
from tests.factories import member, write_hf_model
from tests.ner_data import sentences

ACME = member("acme", Scope.TRAINING, Scope.MODELS_READ)


# -- expected calibration error --------------------------------------------------------------


def test_ece_weights_each_bins_gap_by_its_share_of_examples() -> None:
    # Three bins of one example each: |1 - 0.95|, |0 - 0.55|, |1 - 0.25|, a third each.
    calibration = expected_calibration_error([0.95, 0.55, 0.25], [True, False, True])
    assert calibration.ece == pytest.approx((0.05 + 0.55 + 0.75) / 3)
    assert len(calibration.bins) == 15
    filled = [(b.lower, b.upper, b.count) for b in calibration.bins if b.count]
    assert filled == [
        pytest.approx((3 / 15, 4 / 15, 1)),
        pytest.approx((8 / 15, 9 / 15, 1)),
        pytest.approx((14 / 15, 1.0, 1)),
    ]


def test_ece_compares_a_bins_mean_confidence_with_its_accuracy() -> None:
    # One bin, (0.6667, 0.7333]: accuracy 1/2 against a mean confidence of 0.71.
    calibration = expected_calibration_error([0.70, 0.72], [True, False])
    (full,) = [b for b in calibration.bins if b.count]
    assert (full.count, full.accuracy) == (2, 0.5)
    assert full.confidence == pytest.approx(0.71)
    assert calibration.ece == pytest.approx(0.21)


def test_ece_bin_edges_and_extremes() -> None:
    calibration = expected_calibration_error([0.0, 1.0, 1.0], [False, True, True])
    assert calibration.bins[0].count == 1  # 0 joins the first bin
    assert calibration.bins[-1].count == 2  # 1 closes the last
    assert calibration.ece == 0.0  # always right when sure, never claims anything else
    assert expected_calibration_error([], []).ece == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error([0.5], [])


# -- fixed models ----------------------------------------------------------------------------


class FixedClassifier(LoadedModel):
    """Answers each text with the scores it was given for it."""

    tasks = frozenset({"text-classification"})
    memory_bytes = 0

    def __init__(self, labels: Sequence[str], scores: dict[str, Sequence[float]]) -> None:
        self.source = ModelSource.for_directory(
            Path("fixed"), task="text-classification", runtime="fixed", name="fixed"
        )
        self.labels = tuple(labels)
        self.scores = scores
        self.calls: list[int] = []

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        self.calls.append(len(texts))
        return [ranked(self.labels, self.scores[text]) for text in texts]


class FixedTagger(LoadedModel):
    tasks = frozenset({"token-classification"})
    memory_bytes = 0

    def __init__(self, entities: dict[str, list[Entity]]) -> None:
        self.source = ModelSource.for_directory(
            Path("fixed"), task="token-classification", runtime="fixed", name="tagger"
        )
        self.labels = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
        self.entities = entities

    def extract_entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        return [self.entities.get(text, []) for text in texts]


def entity(text: str, part: str, label: str) -> Entity:
    start = text.index(part)
    return Entity(text=part, label=label, start=start, end=start + len(part))


def test_classifier_metrics_calibration_and_worst_examples_by_hand() -> None:
    model = FixedClassifier(
        ("neg", "pos"),
        {
            "good": (0.1, 0.9),  # right, confident
            "fine": (0.4, 0.6),  # right
            "bad": (0.3, 0.7),  # wrong: pos for a neg
            "awful": (0.8, 0.2),  # right
            "meh": (0.5, 0.5),  # labelled "mixed", a label the model does not know
        },
    )
    examples = [
        {"text": "good", "label": "pos"},
        {"text": "fine", "label": "pos"},
        {"text": "bad", "label": "neg"},
        {"text": "awful", "label": "neg"},
        {"text": "meh", "label": "mixed"},
    ]
    report = score(model, "text-classification", examples, batch_size=2)
    assert model.calls == [2, 2, 1]
    assert report.model == "fixed:1"
    assert report.n_examples == 5
    assert report.labels == ("neg", "pos", "mixed")  # the model's order, then unknown ones
    assert report.metrics["accuracy"] == pytest.approx(3 / 5)
    # "meh" ties, and ranks neg first. neg: 1 right of 2 predicted, 1 of 2 true found; pos:
    # 2 of 3 predicted, 2 of 2 found; mixed: never predicted, never found.
    assert report.metrics["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert report.metrics["macro_recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert report.metrics["macro_f1"] == pytest.approx((1 / 2 + 0.8 + 0) / 3)
    assert report.metrics["micro_f1"] == pytest.approx(3 / 5)
    assert report.confusion_matrix == ((1, 1, 0), (0, 2, 0), (1, 0, 0))
    assert [(c.label, c.support, c.predicted) for c in report.per_class] == [
        ("neg", 2, 2),
        ("pos", 2, 3),
        ("mixed", 1, 0),
    ]
    # Bins hit: 0.9 (right), 0.6 (right), 0.7 (wrong), 0.8 (right), 0.5 (wrong: a tie
    # ranks neg first, and the truth is "mixed"); each alone in its bin.
    assert report.metrics["ece"] == pytest.approx((0.1 + 0.4 + 0.7 + 0.2 + 0.5) / 5)
    assert report.calibration is not None
    assert report.metrics["ece"] == report.calibration.ece
    worst = [(w.text, w.score, w.label, w.predicted) for w in report.worst_examples]
    assert worst == [
        ("meh", 0.0, "mixed", "neg"),
        ("bad", pytest.approx(0.3), "neg", "pos"),
        ("fine", pytest.approx(0.6), "pos", "pos"),
        ("awful", pytest.approx(0.8), "neg", "neg"),
        ("good", pytest.approx(0.9), "pos", "pos"),
    ]
    assert [w.index for w in report.worst_examples] == [4, 2, 1, 3, 0]


def test_worst_examples_are_capped_cut_and_ordered_ties_by_position() -> None:
    long_text = "word " * 100
    texts = [f"{i} {long_text}" for i in range(30)]
    # Probability of the true label "pos": 0.5 for even positions, 0.9 for odd ones.
    model = FixedClassifier(
        ("neg", "pos"), {t: (0.5, 0.5) if i % 2 == 0 else (0.1, 0.9) for i, t in enumerate(texts)}
    )
    report = score(model, "text-classification", [{"text": t, "label": "pos"} for t in texts])
    assert len(report.worst_examples) == MAX_WORST
    assert [w.index for w in report.worst_examples] == [*range(0, 30, 2), *range(1, 10, 2)]
    assert all(len(w.text) == TEXT_CHARS and w.text.endswith("…") for w in report.worst_examples)


def test_reports_round_trip_through_json_and_deltas_subtract() -> None:
    model = FixedClassifier(("neg", "pos"), {"a": (0.2, 0.8), "b": (0.6, 0.4)})
    examples = [{"text": "a", "label": "pos"}, {"text": "b", "label": "pos"}]
    report = score(model, "text-classification", examples)
    again = EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    better = FixedClassifier(("neg", "pos"), {"a": (0.2, 0.8), "b": (0.3, 0.7)})
    other = score(better, "text-classification", examples)
    assert deltas(other, report)["accuracy"] == pytest.approx(0.5)
    assert deltas(report, other)["ece"] == pytest.approx(
        report.metrics["ece"] - other.metrics["ece"]
    )


def test_tagger_entities_are_mapped_onto_the_tokens_they_cover() -> None:
    tokens = ["Ada", "Lovelace", "visited", "New", "York", "."]
    text = " ".join(tokens)
    found = [entity(text, "Ada Lovelace", "PER"), entity(text, "York", "LOC")]
    assert tags_of(tokens, found) == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    # An entity that ends inside a token still takes the whole token.
    assert tags_of(tokens, [Entity("Lov", "PER", 4, 7)]) == ["O", "B-PER", "O", "O", "O", "O"]


def test_tagger_entity_scores_and_worst_sentences_by_hand() -> None:
    sentences = [
        (["Ada", "Lovelace", "visited", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"]),
        (["Pele", "met", "Obama"], ["B-PER", "O", "B-PER"]),
        (["It", "rained"], ["O", "O"]),
        (["Merkel", "left", "Berlin"], ["B-PER", "O", "B-LOC"]),
    ]
    texts = [" ".join(tokens) for tokens, _ in sentences]
    model = FixedTagger(
        {
            # both right
            texts[0]: [entity(texts[0], "Ada Lovelace", "PER"), entity(texts[0], "Paris", "LOC")],
            # one right, one missed
            texts[1]: [entity(texts[1], "Pele", "PER")],
            # a false positive in a sentence without entities
            texts[2]: [entity(texts[2], "It", "LOC")],
            # both wrong: a type mix-up and a span cut short is still a whole-token span here
            texts[3]: [entity(texts[3], "Merkel", "LOC"), entity(texts[3], "Berlin", "PER")],
        }
    )
    examples = [{"tokens": tokens, "tags": tags} for tokens, tags in sentences]
    report = score(model, "token-classification", examples)
    # 6 true entities, 6 predicted, 3 correct.
    assert report.metrics["entity_precision"] == pytest.approx(3 / 6)
    assert report.metrics["entity_recall"] == pytest.approx(3 / 6)
    assert report.metrics["entity_f1"] == pytest.approx(0.5)
    assert report.metrics["token_accuracy"] == pytest.approx(8 / 12)
    per_type = {c.label: (c.support, c.predicted, c.f1) for c in report.per_class}
    assert per_type == {
        "LOC": (2, 3, pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))),
        "PER": (4, 3, pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))),
    }
    assert report.confusion_matrix is None
    assert report.calibration is None
    # F1 0 with 4 errors, F1 0 with 1 error, then F1 2/3; the perfect sentence is left out.
    assert [(w.index, w.score) for w in report.worst_examples] == [
        (3, 0.0),
        (2, 0.0),
        (1, pytest.approx(2 / 3)),
    ]
    first = report.worst_examples[0]
    assert first.expected_entities is not None
    assert first.predicted_entities is not None
    assert [(m.text, m.label) for m in first.expected_entities] == [
        ("Merkel", "PER"),
        ("Berlin", "LOC"),
    ]
    assert [(m.text, m.label) for m in first.predicted_entities] == [
        ("Merkel", "LOC"),
        ("Berlin", "PER"),
    ]


def test_tasks_that_cannot_be_scored_are_refused_naming_them() -> None:
    model = FixedClassifier(("neg", "pos"), {})
    with pytest.raises(InvalidRequest) as caught:
        score(model, "embedding", [{"text": "x"}])
    assert caught.value.param == "model"
    assert all(task in caught.value.message for task in EVALUATED_TASKS)
    with pytest.raises(InvalidRequest) as caught:
        score(model, "token-classification", [{"tokens": ["x"], "tags": ["O"]}])
    assert caught.value.param == "model"
    with pytest.raises(InvalidRequest) as caught:
        score(model, "text-classification", [])
    assert caught.value.param == "file"


# -- end to end on a registry: the catalog's VADER -------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Registry, DatasetService]]:
    registry = build_registry(f"sqlite:///{tmp_path / 'openmaas.db'}", tmp_path / "artifacts")
    try:
        CatalogService(registry).register("vader")
    except OpenMaaSError as exc:
        pytest.skip(f"vader is not installed here: {exc.message}")
    yield registry, DatasetService(registry.db, registry.artifacts)
    registry.db.close()


def upload(datasets: DatasetService, rows: list[dict[str, object]], caller: Principal) -> str:
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    dataset = datasets.create(
        io.BytesIO(data), filename="labelled.jsonl", project=caller.project, caller=caller
    )
    assert dataset.status == "processed", dataset.report
    return dataset.id


REVIEWS = [
    {"text": "I love this, it is wonderful!", "label": "positive"},
    {"text": "What a great day", "label": "positive"},
    {"text": "This is terrible and I hate it.", "label": "negative"},
    {"text": "The table is in the kitchen.", "label": "neutral"},
    {"text": "not bad at all", "label": "positive"},
    {"text": "I could not be more disappointed", "label": "negative"},
    {"text": "It was fine I guess", "label": "neutral"},
]


def test_evaluate_reference_scores_vader_as_its_own_answers_say(
    world: tuple[Registry, DatasetService],
) -> None:
    registry, datasets = world
    file_id = upload(datasets, REVIEWS, ACME)
    report = evaluate_reference(registry, datasets, "vader", file_id, caller=ACME)

    version = registry.resolve("vader", caller=SYSTEM)
    assert report.model == f"vader:{version.version}"
    with registry.open_files("vader", caller=SYSTEM) as opened:
        vader = get_runtime("rules").load(
            ModelSource.from_version(opened.version, opened.directory), LoadOptions()
        )
    answers = vader.classify([row["text"] for row in REVIEWS])
    top = [ranking[0].label for ranking in answers]
    right = [t == row["label"] for t, row in zip(top, REVIEWS, strict=True)]
    assert report.n_examples == len(REVIEWS)
    assert report.metrics["accuracy"] == pytest.approx(sum(right) / len(REVIEWS))
    expected_ece = expected_calibration_error([r[0].score for r in answers], right).ece
    assert report.metrics["ece"] == pytest.approx(expected_ece)
    truth_scores = [
        next(s.score for s in ranking if s.label == row["label"])
        for ranking, row in zip(answers, REVIEWS, strict=True)
    ]
    assert [w.score for w in report.worst_examples] == pytest.approx(sorted(truth_scores))
    assert sum(map(sum, report.confusion_matrix or ())) == len(REVIEWS)


def test_evaluate_reference_refusals_name_the_parameter(
    world: tuple[Registry, DatasetService], tmp_path: Path
) -> None:
    registry, datasets = world
    reviews = upload(datasets, REVIEWS, ACME)
    tagged = upload(datasets, [{"tokens": ["Paris"], "tags": ["B-LOC"]}] * 3, ACME)
    registry.registration.register_plan(
        "acme/encoder",
        plan_directory(write_hf_model(tmp_path / "encoder")),
        VersionSpec(task="embedding", project="acme"),
        caller=SYSTEM,
    )
    cases = [
        ("vader", tagged, {}, "file", "token-classification"),
        ("vader", "file-000000000000000000000000", {}, "file", "no such file"),
        ("vader", reviews, {"max_examples": 3}, "file", "OPENMAAS_MAX_EVAL_EXAMPLES"),
        ("no-such-model", reviews, {}, "model", "not found"),
        ("encoder", reviews, {}, "model", "text-classification and token-classification"),
    ]
    for reference, file_id, options, param, said in cases:
        with pytest.raises(InvalidRequest) as caught:
            evaluate_reference(registry, datasets, reference, file_id, caller=ACME, **options)
        assert caught.value.param == param, (reference, file_id)
        assert said in caught.value.message, caught.value.message
    # Another project's file is not found, like a missing one.
    other = member("globex", Scope.TRAINING, Scope.MODELS_READ)
    with pytest.raises(InvalidRequest) as caught:
        evaluate_reference(registry, datasets, "vader", reviews, caller=other)
    assert caught.value.param == "file"


# -- a real tagger, trained here ------------------------------------------------------------

TINY_TAGGER = {
    "n_epochs": 12,
    "min_frequency": 1,
    "embedding_dim": 32,
    "casing_dim": 8,
    "hidden_size": 32,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "dropout": 0.1,
}


def char_spans(tokens: Sequence[str], tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of BIO tags as (type, first char, last char) of the space-joined text."""
    starts = [sum(len(t) + 1 for t in tokens[:i]) for i in range(len(tokens))]
    spans = set()
    for span in entity_spans(tags):
        last = span.end - 1
        spans.add((span.label, starts[span.start], starts[last] + len(tokens[last])))
    return spans


@pytest.fixture
def one_thread() -> Iterator[None]:
    """A tiny network gains nothing from a second torch thread, which only spins (CPU time,
    no speed) while another process holds the other core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_a_trained_bilstm_tagger_scores_as_its_own_entities_say(tmp_path: Path) -> None:
    """The tagger's answers, compared with the true entities in character offsets (no tag
    mapping involved), give the same entity precision, recall and F1 as the report."""
    train = sentences(120, seed=0)
    # No token with inner punctuation ("U.S."): the tagger splits those into pieces, and
    # character spans then equal token spans whatever it predicts.
    held_out = [
        s for s in sentences(60, seed=1) if all(t.isalnum() or t == "." for t in s["tokens"])
    ]
    recipe = RECIPES["bilstm_tagger"]
    context = TrainingContext(
        job_id="tagger",
        task="token-classification",
        train=train,
        validation=[],
        test=held_out[:5],
        hyperparameters=recipe.resolve(TINY_TAGGER, len(train)),
        seed=0,
        output_dir=tmp_path / "model",
        work_dir=tmp_path / "work",
    )
    recipe.train(context)
    source = ModelSource.for_directory(
        context.output_dir, task="token-classification", runtime="openmaas-nn", name="tagger"
    )
    tagger = get_runtime("openmaas-nn").load(source, LoadOptions())
    report = score(tagger, "token-classification", held_out)

    found = tagger.extract_entities([" ".join(s["tokens"]) for s in held_out])
    true_total = predicted_total = correct = 0
    for example, entities in zip(held_out, found, strict=True):
        expected = char_spans(example["tokens"], example["tags"])
        got = {(e.label, e.start, e.end) for e in entities}
        true_total, predicted_total = true_total + len(expected), predicted_total + len(got)
        correct += len(expected & got)
    assert report.n_examples == len(held_out)
    assert report.metrics["entity_precision"] == pytest.approx(correct / predicted_total)
    assert report.metrics["entity_recall"] == pytest.approx(correct / true_total)
    assert {c.label for c in report.per_class} <= {"PER", "LOC", "ORG"}
    assert sum(c.support for c in report.per_class) == true_total
    assert len(report.worst_examples) <= MAX_WORST
    assert all(w.score < 1.0 for w in report.worst_examples)
