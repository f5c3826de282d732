"""Pretrained word vectors for the networks trained from scratch, against a real server and
its job worker: vectors imported from a GloVe-style text file are registered and served on
/v1/embeddings; a TextCNN job starts its embedding layer from them (static: the covered rows
are the file's vectors after training), reports the vocabulary's coverage and takes the
vectors' width; a GRU job starts from vectors a word2vec job trained on the same texts;
bad references and bad files are refused with a 400 naming them."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from safetensors.numpy import load_file

from openmaas import Client
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import start_job_server

pytest.importorskip("gensim")

# Every text holds 5 of these and one of the sentiment words, so the vocabulary of any
# training split is exactly POOL + SENTIMENT.
POOL = ("the", "film", "story", "cast", "music", "plot", "scenes", "ending", "actors", "script")
SENTIMENT = {"good": "positive", "bad": "negative"}
UNCOVERED = ("ending", "script")  # vocabulary words the imported file lacks
DIMENSIONS = 8
TENANT_SCOPES = ["inference", "models:read", "models:write", "training"]


def labelled_texts(n: int = 160, seed: int = 3) -> list[dict[str, str]]:
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        word = "good" if i % 2 else "bad"
        words = [*rng.sample(POOL, 5), word]
        rng.shuffle(words)
        examples.append({"text": " ".join(words), "label": SENTIMENT[word]})
    return examples


def glove_text(words: list[str], seed: int = 0) -> tuple[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    vectors = {w: rng.normal(size=DIMENSIONS).astype(np.float32) for w in words}
    lines = [" ".join([w, *(repr(float(x)) for x in v)]) for w, v in vectors.items()]
    return "\n".join(lines) + "\n", vectors


def jsonl(examples: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in examples).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(tmp_path_factory, "vectors")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def oai(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as client:
        yield client


def upload(oai: openai.OpenAI, name: str, examples: list[dict[str, str]]) -> str:
    uploaded = oai.files.create(file=(name, jsonl(examples)), purpose="fine-tune")
    assert uploaded.status == "processed", uploaded.status_details
    return uploaded.id


@pytest.fixture(scope="module")
def training_file(oai: openai.OpenAI) -> str:
    return upload(oai, "toy.jsonl", labelled_texts())


def import_vectors(
    server: RunningServer, name: str, content: bytes, key: str | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/registry/models/{name}/versions/word_vectors",
        files={"file": ("vectors.txt", content, "text/plain")},
        headers={"Authorization": f"Bearer {key or server.key}"},
        timeout=60,
    )


def create_job(
    server: RunningServer, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/training/jobs",
        json=body,
        headers={"Authorization": f"Bearer {key or server.key}"},
        timeout=60,
    )


def stored_file(server: RunningServer, sha256: str) -> Path:
    """A registered file, found in the server's artifact store by its digest."""
    for path in (server.home / "artifacts" / "objects").rglob("*"):
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return path
    raise AssertionError(f"no stored file has sha256 {sha256}")


@pytest.fixture(scope="module")
def imported(server: RunningServer) -> dict[str, np.ndarray]:
    covered = [w for w in POOL if w not in UNCOVERED] + list(SENTIMENT) + ["unseen"]
    text, vectors = glove_text(covered)
    response = import_vectors(server, "toy-vectors", text.encode())
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["task"], version["runtime"]) == ("embedding", "word2vec")
    return vectors


def test_imported_text_vectors_serve_embeddings(
    oai: openai.OpenAI, imported: dict[str, np.ndarray]
) -> None:
    answer = oai.embeddings.create(
        model="toy-vectors", input=["good film", "bad"], encoding_format="float"
    )
    first, second = (np.asarray(item.embedding) for item in answer.data)
    mean = (imported["good"] + imported["film"]) / 2
    np.testing.assert_allclose(first, mean / np.linalg.norm(mean), rtol=1e-5)
    np.testing.assert_allclose(second, imported["bad"] / np.linalg.norm(imported["bad"]), rtol=1e-5)


@pytest.fixture(scope="module")
def static_job(sdk: Client, training_file: str, imported: dict[str, np.ndarray]) -> str:
    """A TextCNN job on frozen imported vectors narrower than its embedding_dim."""
    job = sdk.create_training_job(
        "textcnn",
        training_file,
        hyperparameters={
            "embeddings": "toy-vectors",
            "embeddings_mode": "static",
            "n_epochs": 2,
            "n_filters": 4,
        },
        seed=1,
    )
    done = sdk.wait_for_training_job(job.id, poll_s=0.2, timeout_s=180)
    assert done.status == "succeeded", done.error
    return job.id


def test_static_embeddings_keep_the_vectors_and_coverage_is_reported(
    server: RunningServer, sdk: Client, static_job: str, imported: dict[str, np.ndarray]
) -> None:
    done = sdk.get_training_job(static_job)
    vocabulary = len(POOL) + len(SENTIMENT)
    expected = (vocabulary - len(UNCOVERED)) / vocabulary
    events = sdk.training_job_events(static_job, limit=1000).data
    texts = [e.message for e in events]
    assert any(
        f"{vocabulary - len(UNCOVERED)} of the {vocabulary} vocabulary words" in t for t in texts
    ), texts
    assert any(f"the embedding layer takes {DIMENSIONS}" in t for t in texts), texts
    reported = [e.data for e in events if e.type == "metrics" and e.data]
    assert any(d.get("embeddings_coverage") == pytest.approx(expected) for d in reported)

    version = sdk.resolve(str(done.fine_tuned_model))
    assert version.metrics["embeddings_coverage"] == pytest.approx(expected)
    assert 0 < version.metrics["embeddings_token_coverage"] < 1
    recorded = version.params["embeddings"]
    assert (recorded["model"], recorded["mode"], recorded["dimensions"]) == (
        "toy-vectors:1",
        "static",
        DIMENSIONS,
    )

    files = {f.path: f.sha256 for f in version.files}
    weights = load_file(str(stored_file(server, files["model.safetensors"])))
    table = weights["embedding.weight"]
    assert table.shape[1] == DIMENSIONS
    tokenizer = json.loads(stored_file(server, files["tokenizer.json"]).read_text())
    ids: dict[str, int] = tokenizer["model"]["vocab"]
    for word in (*POOL, *SENTIMENT):
        if word in imported:
            np.testing.assert_array_equal(table[ids[word]], imported[word])
        else:
            assert np.abs(table[ids[word]]).max() <= 0.25
    assert not table[0].any()  # padding


def test_word2vec_vectors_trained_here_start_a_gru(
    oai: openai.OpenAI, sdk: Client, training_file: str
) -> None:
    texts = upload(oai, "texts.jsonl", [{"text": e["text"]} for e in labelled_texts()])
    vectors_job = sdk.create_training_job(
        "word2vec",
        texts,
        hyperparameters={"vector_size": 16, "min_count": 1, "n_epochs": 2},
        validation_split=0.0,
        seed=2,
        model_name="toy-word2vec",
    )
    vectors_done = sdk.wait_for_training_job(vectors_job.id, poll_s=0.2, timeout_s=180)
    assert vectors_done.status == "succeeded", vectors_done.error

    job = sdk.create_training_job(
        "gru",
        training_file,
        hyperparameters={"embeddings": "toy-word2vec", "n_epochs": 1, "hidden_size": 8},
        seed=1,
    )
    done = sdk.wait_for_training_job(job.id, poll_s=0.2, timeout_s=180)
    assert done.status == "succeeded", done.error
    version = sdk.resolve(str(done.fine_tuned_model))
    # Every word of the classifier's vocabulary is in the texts word2vec trained on.
    assert version.metrics["embeddings_coverage"] == 1.0
    assert version.params["embeddings"]["mode"] == "non-static"
    assert version.params["embeddings"]["dimensions"] == 16


def test_bad_embeddings_references_are_refused(
    server: RunningServer, sdk: Client, training_file: str, static_job: str
) -> None:
    def refused(hyperparameters: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        body = {"recipe": "textcnn", "training_file": training_file}
        response = create_job(server, {**body, "hyperparameters": hyperparameters}, key)
        assert response.status_code == 400, response.text
        error: dict[str, Any] = response.json()["error"]
        assert "embeddings" in error["message"]
        return error

    missing = refused({"embeddings": "no-such-vectors"})
    assert (missing["param"], missing["code"]) == ("hyperparameters.embeddings", "model_not_found")
    assert refused({"embeddings": 5})["param"] == "hyperparameters"
    assert refused({"embeddings": "toy-vectors", "embeddings_mode": "frozen"})["param"] == (
        "hyperparameters"
    )
    # A model that is no word vectors: the classifier trained on them.
    classifier = str(sdk.get_training_job(static_job).fine_tuned_model)
    wrong = refused({"embeddings": classifier})
    assert wrong["code"] == "wrong_model_type"

    # Another project's vectors are not there for this one, even by the name it gave them.
    sdk.create_project("elsewhere")
    theirs = sdk.create_key("elsewhere-key", TENANT_SCOPES, project="elsewhere").key
    text, _ = glove_text(["good", "bad"])
    assert import_vectors(server, "their-vectors", text.encode(), key=theirs).status_code == 201
    ours = sdk.create_key("default-key", TENANT_SCOPES, project="default").key
    hidden = refused({"embeddings": "their-vectors"}, key=ours)
    assert hidden["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b"the 0.1 0.2\nfilm 0.1\n", 2, "has 1 numbers; every word needs 2"),
        (b"the 0.1 abc\n", 1, "'abc' is not a number"),
        (b"the nan 0.1\n", 1, "NaN or infinite"),
        (b"\xff\xfe 0.1\n", 1, "not UTF-8"),
        (b"2 3\nthe 0.1 0.2 0.3\n", 1, "declares 2 words"),
        (b"3 2000\n", 1, "2000 dimensions"),
    ],
)
def test_bad_vectors_files_are_refused_naming_the_line(
    server: RunningServer, content: bytes, line: int, problem: str
) -> None:
    response = import_vectors(server, "bad-vectors", content)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "file"
    assert f"line {line}" in error["message"], error
    assert problem in error["message"], error


def test_an_empty_vectors_file_is_refused(server: RunningServer) -> None:
    response = import_vectors(server, "bad-vectors", b"\n")
    assert response.status_code == 400, response.text
    assert "holds no word vectors" in response.json()["error"]["message"]
