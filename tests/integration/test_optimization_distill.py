"""Distillation jobs against a real server with one job worker: a BiLSTM teacher, trained
here by a training job on generated reviews, teaches a `textcnn` student on an uploaded file
(started with the CLI command docs/optimization.md shows); the student serves on
/v1/classify with the teacher's labels and agrees with it on reviews neither has seen. A
tiny BERT teacher keeps its first layer as a `layers:1` student served by transformers; VADER
(a `rules` model) teaches a TextCNN its three labels; a cancel stops a job between steps.
Bad settings and a missing training file are 400s naming them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import APIError, Client
from openmaas.protocol.optimization import OptimizationJobOut
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import ROOT, start_job_server
from tests.integration.job_servers import run_cli as cli
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import build_bert
from tests.sentiment_data import LABELS, jsonl, reviews

TEACHER = "review-teacher"
# A BiLSTM teacher (the recipe's sizes) trains in seconds on 400 short reviews.
TEACHER_HYPERPARAMETERS = {"n_epochs": 6, "batch_size": 16}
# Reviews neither the teacher nor the student trained on.
UNSEEN = [example["text"] for example in reviews(200, seed=2)]
# The student's agreement with its teacher on UNSEEN, as served. Measured: 0.85 (170 of
# 200; seeds fixed). Not 1: in "the plot was really dull but the cast was superb" the BiLSTM
# teacher sees which opinion comes last; the TextCNN's widest window (5 words) often cannot,
# and follows it on about half of those. A student that ignored its teacher would agree on
# about half the reviews.
AGREEMENT_BOUND = 0.8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(tmp_path_factory, "distill")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


def upload(sdk: Client, directory: Path, name: str, examples: list[dict[str, str]]) -> str:
    path = directory / name
    path.write_bytes(jsonl(examples))
    uploaded = sdk.upload_file(path, purpose="fine-tune")
    assert uploaded.status == "processed", uploaded
    return uploaded.id


@pytest.fixture(scope="module")
def teacher(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("teacher")
    file_id = upload(sdk, directory, "teacher.jsonl", reviews(400, seed=0))
    job = sdk.create_training_job(
        "bilstm", file_id, hyperparameters=TEACHER_HYPERPARAMETERS, model_name=TEACHER, seed=0
    )
    done = sdk.wait_for_training_job(job.id, timeout_s=300)
    assert done.status == "succeeded", done.error
    return TEACHER


@pytest.fixture(scope="module")
def distill_file(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return upload(sdk, tmp_path_factory.mktemp("distill"), "distill.jsonl", reviews(1000, seed=1))


def finished(sdk: Client, job_id: str, timeout_s: float = 300.0) -> OptimizationJobOut:
    def check() -> OptimizationJobOut | None:
        job = sdk.get_optimization_job(job_id)
        return job if job.finished else None

    return wait_for(f"optimization job {job_id} to finish", check, timeout_s)


def top_labels(server: RunningServer, model: str, texts: list[str]) -> list[str]:
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": model, "input": texts, "top_k": 1},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return [item["labels"][0]["label"] for item in answer.json()["data"]]


def documented_command(teacher: str = "teacher") -> str:
    """The distill command of docs/optimization.md whose teacher is `teacher`."""
    docs = (ROOT / "docs" / "optimization.md").read_text(encoding="utf-8")
    commands = [
        line
        for line in docs.splitlines()
        if line.startswith(f"openmaas optimize run {teacher} distill")
    ]
    assert len(commands) == 1, commands
    return commands[0]


def test_a_textcnn_student_serves_the_teachers_labels_and_agrees_with_it(
    server: RunningServer, sdk: Client, teacher: str, distill_file: str
) -> None:
    # The command docs/optimization.md shows, for this teacher and file (plus --json, to
    # read the job here).
    words = documented_command().replace("file-…", distill_file).split()
    assert words[:5] == ["openmaas", "optimize", "run", "teacher", "distill"], words
    ran = cli(server, *words[1:3], teacher, *words[4:], "--json")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    job = json.loads(ran.stdout)
    assert (job["status"], job["optimized_model"]) == ("succeeded", f"{TEACHER}-distilled")
    assert job["settings"]["student"] == "textcnn"
    assert job["settings"]["temperature"] == 2.0

    parent = sdk.resolve(teacher)
    version = sdk.resolve(f"{TEACHER}-distilled")
    assert (version.task, version.runtime) == ("text-classification", "openmaas-nn")
    assert version.params["labels"] == parent.params["labels"]  # the teacher's, in its order
    assert version.params["architecture"] == "textcnn"
    assert version.lineage.transform == "distill"
    assert version.lineage.job_id == job["id"]
    assert version.lineage.source["parent"] == f"{TEACHER}:{parent.version}"
    assert version.lineage.source["method"] == "distill"
    # Its own metrics beside the runner's measurements against the teacher.
    assert 0 <= version.metrics["teacher_agreement_heldout"] <= 1
    assert 1 <= version.metrics["distill_epochs"] <= 10
    assert version.metrics["throughput_per_s_batch32"] > 0
    assert 0 <= version.metrics["builtin_agreement_with_parent"] <= 1

    taught = top_labels(server, teacher, UNSEEN)
    learned = top_labels(server, f"{TEACHER}-distilled", UNSEEN)
    assert set(learned) <= set(LABELS)
    agreement = sum(a == b for a, b in zip(taught, learned, strict=True)) / len(UNSEEN)
    assert agreement >= AGREEMENT_BOUND, agreement

    messages = [event.message for event in sdk.optimization_job_events(job["id"]).data]
    assert any(m == "The teacher labels 1000 texts" for m in messages), messages
    assert any(m.startswith("epoch 1/10:") and "val_agreement" in m for m in messages), messages


def test_a_transformers_teacher_keeps_its_first_layer(
    server: RunningServer, sdk: Client, distill_file: str, tmp_path: Path
) -> None:
    path = build_bert(tmp_path / "bert", head="sequence-classification", labels=LABELS, seed=3)
    sdk.upload("tiny-review-bert", path, task="text-classification")
    with pytest.raises(APIError) as caught:  # all of its 2 layers: nothing smaller
        sdk.create_optimization_job(
            "tiny-review-bert",
            "distill",
            training_file=distill_file,
            settings={"student": "layers:2"},
        )
    assert (caught.value.status_code, caught.value.param) == (400, "settings.student")
    job = sdk.create_optimization_job(
        "tiny-review-bert",
        "distill",
        training_file=distill_file,
        settings={"student": "layers:1", "epochs": 1},
    )
    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    version = sdk.resolve("tiny-review-bert-distilled")
    assert (version.runtime, version.params["teacher_layers"]) == ("transformers", 1)
    assert version.metrics["size_ratio"] < 1  # one of its two layers
    messages = [event.message for event in sdk.optimization_job_events(job.id).data]
    assert "Student: the teacher's first 1 of 2 layers" in messages, messages
    assert set(top_labels(server, "tiny-review-bert-distilled", UNSEEN[:4])) <= set(LABELS)


def test_bad_requests_name_the_setting_or_the_missing_file(
    sdk: Client, teacher: str, distill_file: str
) -> None:
    listed = {method.name: method for method in sdk.list_optimization_methods()}
    assert listed["distill"].needs_training_file
    assert listed["distill"].settings["student"] == "textcnn"
    with pytest.raises(APIError) as caught:
        sdk.create_optimization_job(teacher, "distill")
    assert (caught.value.status_code, caught.value.param) == (400, "training_file")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"student": "gpt2"}, "settings.student"),
        ({"student": "layers:0"}, "settings.student"),
        ({"student": "layers:1"}, "settings.student"),  # the teacher is no transformer
        ({"temperature": -1}, "settings.temperature"),
        ({"alpha": 2}, "settings.alpha"),
        ({"epochs": 0}, "settings.epochs"),
        ({"augment": 51}, "settings.augment"),
        ({"mask_probability": 1.5}, "settings.mask_probability"),
        ({"ngram_probability": -0.1}, "settings.ngram_probability"),
        ({"unlabeled_file": "file-x"}, "settings.unlabeled_file"),  # not a setting (yet)
        ({"embeddings": "no-such-vectors"}, "settings.embeddings"),
        ({"embeddings": teacher}, "settings.embeddings"),  # a classifier, not word vectors
        ({"embeddings": ""}, "settings.embeddings"),
        ({"embeddings_mode": "frozen"}, "settings.embeddings_mode"),
    ]
    for settings, param in cases:
        with pytest.raises(APIError) as caught:
            sdk.create_optimization_job(
                teacher, "distill", training_file=distill_file, settings=settings
            )
        assert (caught.value.status_code, caught.value.param) == (400, param), settings


STUDENT = "review-student-vectors"


def test_a_student_starts_from_word_vectors_trained_here(
    server: RunningServer, sdk: Client, teacher: str, distill_file: str, tmp_path: Path
) -> None:
    """`settings.embeddings`: the student's word embeddings start from a word2vec model a
    training job made of the same texts (Tang et al. start theirs from word2vec); the
    version records the vectors and their coverage of the student's vocabulary."""
    texts = upload(
        sdk, tmp_path, "texts.jsonl", [{"text": e["text"]} for e in reviews(1000, seed=1)]
    )
    vectors_job = sdk.create_training_job(
        "word2vec",
        texts,
        hyperparameters={"vector_size": 24, "min_count": 1, "n_epochs": 2},
        validation_split=0.0,
        seed=3,
        model_name="review-vectors",
    )
    vectors = sdk.wait_for_training_job(vectors_job.id, timeout_s=300)
    assert vectors.status == "succeeded", vectors.error

    # The command docs/optimization.md shows, with this teacher, file and vectors.
    words = (
        documented_command("sst2-teacher")
        .replace("file-…", distill_file)
        .replace("sst2-word2vec", "review-vectors")
        .split()
    )
    assert "embeddings=review-vectors" in words, words
    more = ["--set", "embeddings_mode=static", "--set", "epochs=2"]
    ran = cli(server, *words[1:3], teacher, *words[4:], *more, "--model-name", STUDENT, "--json")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    job = json.loads(ran.stdout)
    assert job["status"] == "succeeded", job
    messages = [event.message for event in sdk.optimization_job_events(job["id"]).data]
    assert any(
        m.startswith("embeddings review-vectors:1 (static, 24 dimensions)") for m in messages
    )
    version = sdk.resolve(STUDENT)
    assert version.params["embeddings"]["model"] == "review-vectors:1"
    assert version.params["embeddings"]["dimensions"] == 24
    # The generated reviews' words are all in the texts word2vec read (min_count 1).
    assert version.metrics["embeddings_coverage"] == 1.0
    learned = top_labels(server, STUDENT, UNSEEN[:20])
    assert set(learned) <= set(LABELS)


def test_a_cancel_stops_the_student_between_steps_and_registers_nothing(
    sdk: Client, teacher: str, distill_file: str
) -> None:
    job = sdk.create_optimization_job(
        teacher,
        "distill",
        training_file=distill_file,
        settings={"epochs": 1000, "patience": 0},  # hours of epochs, unless stopped
        model_name="never-registered",
    )

    def first_epoch() -> bool | None:
        messages = [event.message for event in sdk.optimization_job_events(job.id).data]
        return True if any(m.startswith("epoch 1/1000:") for m in messages) else None

    wait_for(f"job {job.id}'s first epoch", first_epoch, 300)
    sdk.cancel_optimization_job(job.id)
    done = finished(sdk, job.id, timeout_s=60)
    assert done.status == "cancelled", done
    with pytest.raises(APIError) as caught:
        sdk.resolve("never-registered")
    assert caught.value.status_code == 404


def test_a_rules_teacher_vader_is_distilled_into_a_network(
    server: RunningServer, sdk: Client, distill_file: str
) -> None:
    """Any classifier can teach: VADER's shares of negative, neutral and positive wording
    become a TextCNN's three labels, in VADER's order."""
    vader = sdk.register_catalog_entry("vader")
    words = documented_command("vader").replace("file-…", distill_file).split()
    assert "augment=2" in words, words
    ran = cli(server, *words[1:], "--json")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    done = sdk.get_optimization_job(json.loads(ran.stdout)["id"])  # the CLI waits for it
    assert done.status == "succeeded", done.error
    # Tang et al.'s transfer set: two masked or cut copies of each of the 900 texts the
    # student learns from (a tenth of the 1,000 is held out), all labelled by the teacher.
    messages = [event.message for event in sdk.optimization_job_events(done.id).data]
    assert any(m.startswith("Augmented the 900 texts to learn from with ") for m in messages)
    version = sdk.resolve("vader-distilled")
    augmented = version.metrics["distill_augmented_texts"]
    assert 1500 <= augmented <= 1800, augmented  # short reviews give fewer distinct copies
    assert version.metrics["distill_training_texts"] == 900 + augmented
    assert (version.runtime, version.lineage.source["parent"]) == (
        "openmaas-nn",
        f"vader:{vader.version}",
    )
    assert version.params["labels"] == ["negative", "neutral", "positive"]
    assert 0 <= version.metrics["teacher_agreement_heldout"] <= 1
    assert set(top_labels(server, "vader-distilled", UNSEEN[:4])) <= {
        "negative",
        "neutral",
        "positive",
    }
