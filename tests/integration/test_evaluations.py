"""Evaluations against a real server with one job worker: the catalog's VADER scored on an
uploaded labelled file through the SDK and the CLI, every figure checked against what the
model's own /v1/classify answers for the same texts (scikit-learn's metrics, the ECE worked
out here); two versions of a tiny BERT classifier compared on one file; a BiLSTM tagger
trained here and scored at the entity level; refusals that name the parameter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from openmaas import APIError, Client
from openmaas.protocol.evaluation import EvaluationOut, EvaluationReportOut
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import blocks, run_script, start_job_server
from tests.integration.job_servers import run_cli as cli
from tests.ner_data import conll, sentences
from tests.runtimes.tiny_models import build_bert

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "evaluation.md"
REVIEWS = [
    ("I love this, it is wonderful!", "positive"),
    ("What a great day", "positive"),
    ("not bad at all", "positive"),
    ("The food was good but the service was slow", "positive"),
    ("Brilliant acting and a moving story", "positive"),
    ("I guess it was okay", "positive"),
    ("This is terrible and I hate it.", "negative"),
    ("I could not be more disappointed", "negative"),
    ("What a waste of money", "negative"),
    ("The plot made no sense whatsoever", "negative"),
    ("Awful. Just awful.", "negative"),
    ("The table is in the kitchen.", "neutral"),
    ("The meeting starts at nine", "neutral"),
    ("It was fine I guess", "neutral"),
    ("Sure, great, another Monday", "neutral"),
    ("The report has twelve pages", "neutral"),
]
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(tmp_path_factory, "evaluations")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def vader(sdk: Client) -> str:
    version = sdk.register_catalog_entry("vader")
    return f"vader:{version.version}"


@pytest.fixture(scope="module")
def reviews_file(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "reviews.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in REVIEWS))
    dataset = sdk.upload_dataset(path)
    assert (dataset.status, dataset.task) == ("processed", "text-classification")
    return dataset.id


@pytest.fixture(scope="module")
def conll_file(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "ner.conll"
    path.write_text(conll(sentences(120, seed=0)), encoding="utf-8")
    dataset = sdk.upload_dataset(path)
    assert (dataset.status, dataset.task) == ("processed", "token-classification")
    return dataset.id


def classify(server: RunningServer, model: str, texts: list[str]) -> list[dict[str, float]]:
    """Every label's score per text, as the model serves them."""
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": model, "input": texts, "top_k": 100},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return [{s["label"]: s["score"] for s in item["labels"]} for item in answer.json()["data"]]


def ece(confidences: list[float], correct: list[bool], bins: int = 15) -> float:
    """Guo et al.'s expected calibration error: bins (k/15, (k+1)/15], 0 in the first."""
    total = 0.0
    for k in range(bins):
        lower, upper = k / bins, (k + 1) / bins
        members = [
            i for i, c in enumerate(confidences) if lower < c <= upper or (k == 0 and c == 0)
        ]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            confidence = sum(confidences[i] for i in members) / len(members)
            total += len(members) / len(confidences) * abs(accuracy - confidence)
    return total


def check_against_served(
    server: RunningServer, report: EvaluationReportOut, texts: list[str], truth: list[str]
) -> None:
    """The report's figures, worked out again from the model's /v1/classify answers."""
    served = classify(server, report.model, texts)
    predicted = [max(scores, key=lambda label: scores[label]) for scores in served]
    labels = sorted(set(truth) | set(predicted))
    assert report.n_examples == len(texts)
    assert report.metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    for average in ("macro", "micro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth, predicted, labels=labels, average=average, zero_division=0
        )
        assert report.metrics[f"{average}_f1"] == pytest.approx(f1), average
        if average != "weighted":
            assert report.metrics[f"{average}_precision"] == pytest.approx(precision)
            assert report.metrics[f"{average}_recall"] == pytest.approx(recall)
    confidences = [max(scores.values()) for scores in served]
    right = [p == t for p, t in zip(predicted, truth, strict=True)]
    assert report.metrics["ece"] == pytest.approx(ece(confidences, right), abs=1e-6)
    assert report.calibration is not None
    assert report.calibration.ece == pytest.approx(report.metrics["ece"])
    # The confusion matrix, re-counted in the report's label order.
    order = {label: i for i, label in enumerate(report.labels)}
    counts = np.zeros((len(order), len(order)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        counts[order[t], order[p]] += 1
    assert report.confusion_matrix == counts.tolist()
    # Worst first: the lowest score given to the true label.
    true_scores = [scores.get(t, 0.0) for scores, t in zip(served, truth, strict=True)]
    worst = sorted(range(len(texts)), key=lambda i: (true_scores[i], i))[:20]
    assert [w.index for w in report.worst_examples] == worst
    assert [w.text for w in report.worst_examples] == [texts[i] for i in worst]
    assert [w.score for w in report.worst_examples] == pytest.approx(
        [true_scores[i] for i in worst]
    )


def finished(sdk: Client, evaluation_id: str) -> EvaluationOut:
    done = sdk.wait_for_evaluation(evaluation_id, poll_s=0.2, timeout_s=300)
    assert done.status == "succeeded", done.error
    return done


def test_an_evaluation_reports_what_the_models_own_answers_say(
    server: RunningServer, sdk: Client, vader: str, reviews_file: str
) -> None:
    created = sdk.create_evaluation("vader", reviews_file)
    assert (created.status, created.model, created.model_version) == ("queued", "vader", vader)
    done = finished(sdk, created.id)
    assert done.report is not None
    assert done.report.model == vader
    assert done.compared is None
    assert done.deltas == {}
    assert done.metrics == done.report.metrics
    texts, truth = [t for t, _ in REVIEWS], [y for _, y in REVIEWS]
    check_against_served(server, done.report, texts, truth)
    assert [c.label for c in done.report.per_class] == list(done.report.labels)
    assert sum(c.support for c in done.report.per_class) == len(REVIEWS)

    listed = sdk.list_evaluations()
    assert created.id in [item.id for item in listed.data]
    assert all(item.report is None for item in listed.data)  # the list carries metrics only
    events = [event.message for event in sdk.evaluation_events(created.id).data]
    assert any(message.startswith(f"Scoring {vader} on 16 examples") for message in events)
    with pytest.raises(APIError) as caught:
        sdk.cancel_evaluation(created.id)
    assert (caught.value.status_code, caught.value.param) == (409, "evaluation_id")


def test_two_versions_compared_on_one_file_report_both_and_their_deltas(
    server: RunningServer, sdk: Client, tmp_path: Path, reviews_file: str
) -> None:
    for seed in (3, 4):
        path = build_bert(
            tmp_path / f"bert-{seed}",
            head="sequence-classification",
            labels=("negative", "positive"),
            seed=seed,
        )
        sdk.upload("tiny-classifier", path, task="text-classification")
    done = finished(
        sdk,
        sdk.create_evaluation("tiny-classifier:2", reviews_file, compare_to="tiny-classifier:1").id,
    )
    assert (done.model_version, done.compare_to_version) == (
        "tiny-classifier:2",
        "tiny-classifier:1",
    )
    assert done.report is not None
    assert done.compared is not None
    assert (done.report.model, done.compared.model) == ("tiny-classifier:2", "tiny-classifier:1")
    texts, truth = [t for t, _ in REVIEWS], [y for _, y in REVIEWS]
    check_against_served(server, done.report, texts, truth)
    check_against_served(server, done.compared, texts, truth)
    assert "neutral" in done.report.labels  # in the file, unknown to the model: never right
    assert set(done.deltas) == set(done.report.metrics)
    for name, delta in done.deltas.items():
        assert delta == pytest.approx(done.report.metrics[name] - done.compared.metrics[name])

    # Listed per version: the version evaluated, not the one compared with.
    of_two = [item.id for item in sdk.list_evaluations(model="tiny-classifier:2").data]
    assert of_two == [done.id]
    assert sdk.list_evaluations(model="tiny-classifier:1").data == []
    assert [item.id for item in sdk.list_evaluations(model="tiny-classifier").data] == [done.id]


def test_a_tagger_is_scored_at_the_entity_level(
    server: RunningServer, sdk: Client, conll_file: str
) -> None:
    job = sdk.create_training_job(
        "bilstm_tagger", conll_file, hyperparameters=TINY_TAGGER, model_name="tagger", seed=0
    )
    trained = sdk.wait_for_training_job(job.id, poll_s=0.2, timeout_s=300)
    assert trained.status == "succeeded", trained.error
    done = finished(sdk, sdk.create_evaluation("tagger", conll_file).id)
    assert done.report is not None
    assert done.task == "token-classification"
    assert set(done.metrics) == {"entity_precision", "entity_recall", "entity_f1", "token_accuracy"}
    assert [c.label for c in done.report.per_class] == ["LOC", "ORG", "PER"]
    true_entities = sum(
        s["tags"].count(t) for s in sentences(120, seed=0) for t in ("B-PER", "B-LOC", "B-ORG")
    )
    assert sum(c.support for c in done.report.per_class) == true_entities
    # Its own training held out a tenth of this file; on all of it the tagger does at least
    # as well as a tiny model trained for seconds does there (about 0.9).
    assert done.metrics["entity_f1"] > 0.8
    assert done.report.confusion_matrix is None
    assert all(w.score < 1 and w.expected_entities is not None for w in done.report.worst_examples)


def test_refusals_name_the_parameter(
    sdk: Client, vader: str, reviews_file: str, conll_file: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "vader", "file": conll_file}, "file"),  # token-classification examples
        ({"model": "vader", "file": "file-000000000000000000000000"}, "file"),
        ({"model": "no-such-model", "file": reviews_file}, "model"),
        ({"model": "vader", "file": reviews_file, "compare_to": "no-such-model"}, "compare_to"),
    ]
    for body, param in cases:
        with pytest.raises(APIError) as caught:
            sdk.create_evaluation(**body)
        assert (caught.value.status_code, caught.value.param) == (400, param), body
    with pytest.raises(APIError) as caught:
        sdk.create_evaluation("vader", conll_file)
    assert "token-classification" in caught.value.message
    with pytest.raises(APIError) as caught:
        sdk.get_evaluation("optjob-000000000000000000000000")
    assert caught.value.status_code == 404


def test_the_cli_runs_an_evaluation_waits_and_shows_the_report(
    server: RunningServer, vader: str, tmp_path: Path
) -> None:
    local = tmp_path / "reviews.jsonl"
    local.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in REVIEWS))
    ran = cli(server, "evaluate", "run", "vader", str(local), "--json")
    assert ran.returncode == 0, ran.stderr
    evaluation = EvaluationOut.model_validate_json(ran.stdout)
    assert (evaluation.status, evaluation.model_version) == ("succeeded", vader)
    assert evaluation.report is not None
    check_against_served(
        server, evaluation.report, [t for t, _ in REVIEWS], [y for _, y in REVIEWS]
    )

    listed = cli(server, "evaluate", "list", "--model", vader)
    assert listed.returncode == 0, listed.stderr
    assert evaluation.id in listed.stdout
    shown = cli(server, "evaluate", "show", evaluation.id)
    assert shown.returncode == 0, shown.stderr
    for part in ("confusion matrix", "worst examples", "macro_f1", "ece"):
        assert part in shown.stdout, part


def test_the_docs_commands_run_as_written(
    server: RunningServer, vader: str, tmp_path: Path
) -> None:
    text = DOCS.read_text(encoding="utf-8")
    [script] = [block for block in blocks(text, "console") if "openmaas evaluate run" in block]
    (tmp_path / "reviews.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in REVIEWS)
    )
    ran = run_script(server, script, tmp_path)
    assert ran.returncode == 0, f"{script}\n---\n{ran.stdout}\n{ran.stderr}"
    assert "confusion matrix" in ran.stdout


def test_another_projects_evaluations_and_files_are_not_found(
    server: RunningServer, sdk: Client, vader: str, reviews_file: str
) -> None:
    mine = finished(sdk, sdk.create_evaluation("vader", reviews_file).id)
    sdk.create_project("eval-other")
    key = sdk.create_key("eval-other", ["training", "models:read"], project="eval-other").key
    with Client(server.url, api_key=key) as other:
        with pytest.raises(APIError) as caught:
            other.get_evaluation(mine.id)
        assert caught.value.status_code == 404
        assert mine.id not in [item.id for item in other.list_evaluations().data]
        with pytest.raises(APIError) as caught:
            other.create_evaluation("vader", reviews_file)
        assert (caught.value.status_code, caught.value.param) == (400, "file")
