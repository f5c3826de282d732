"""word2vec end to end, against a real server and its worker process: a JSON Lines file of
plain texts (gensim's Lee corpus, 300 news articles) is uploaded, a `/v1/training/jobs` job
trains the `word2vec` recipe on it, and the model it registers answers `/v1/embeddings`
through the stock `openai` client, as floats and as base64, with sentences on one subject
nearer each other than sentences on two; and the example of docs/training.md, which
uploads the same articles as plain text lines, runs as written."""

from __future__ import annotations

import base64
import importlib.resources
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import openai
import pytest

from openmaas import Client
from tests.integration.conftest import RunningServer, start_server, stop_server

pytest.importorskip("gensim")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"

SENTENCES = (
    "Bushfires threaten homes near Sydney",
    "Firefighters battle a blaze in New South Wales",
    "Taliban fighters retreat in Afghanistan",
)
# Over 5 seeds, these put the two fire sentences 0.13 to 0.21 nearer each other (cosine)
# than either to the war one.
HYPERPARAMETERS = {"vector_size": 32, "min_count": 2, "n_epochs": 15}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("word2vec") / "home", {"OPENMAAS_WORKERS": "1"})
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


@pytest.fixture(scope="module")
def lee_jsonl() -> bytes:
    corpus = importlib.resources.files("gensim").joinpath("test/test_data/lee_background.cor")
    lines = corpus.read_text(encoding="utf-8").splitlines()
    return "".join(json.dumps({"text": line}) + "\n" for line in lines).encode()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_a_word2vec_job_trains_on_plain_texts_and_its_model_serves_embeddings(
    oai: openai.OpenAI, sdk: Client, lee_jsonl: bytes
) -> None:
    uploaded = oai.files.create(file=("lee.jsonl", lee_jsonl), purpose="fine-tune")
    assert uploaded.status == "processed", uploaded.status_details

    # No task given: a file of plain texts trains the recipe's embedding task. word2vec
    # validates nothing, so no validation split is held out.
    job = sdk.create_training_job(
        "word2vec",
        uploaded.id,
        hyperparameters=HYPERPARAMETERS,
        validation_split=0.0,
        seed=5,
        model_name="lee-vectors",
    )
    assert (job.task, job.hyperparameters["architecture"]) == ("embedding", "skipgram")
    done = sdk.wait_for_training_job(job.id, poll_s=0.2, timeout_s=180)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == "lee-vectors:1"

    events = sdk.training_job_events(job.id, limit=1000).data
    losses = [e.data["train_loss"] for e in events if e.type == "metrics" and e.data]
    assert len(losses) == HYPERPARAMETERS["n_epochs"]
    assert losses[-1] < losses[0]
    checkpoints = sdk.training_job_checkpoints(job.id).data
    assert checkpoints[0].step == HYPERPARAMETERS["n_epochs"]

    version = sdk.resolve(done.fine_tuned_model)
    assert (version.task, version.runtime, version.format) == (
        "embedding",
        "word2vec",
        "safetensors",
    )
    assert {"analogy_accuracy", "analogy_coverage", "test_word_coverage"} <= set(version.metrics)
    assert sorted(f.path for f in version.files) == [
        "openmaas.json",
        "vectors.safetensors",
        "vocabulary.json",
    ]

    floats = oai.embeddings.create(
        model=done.fine_tuned_model, input=list(SENTENCES), encoding_format="float"
    )
    vectors = [item.embedding for item in floats.data]
    assert [len(v) for v in vectors] == [32, 32, 32]
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    fires, blaze, war = vectors
    assert cosine(fires, blaze) > cosine(fires, war) + 0.05
    assert cosine(fires, blaze) > cosine(blaze, war) + 0.05
    # Tokens are the words of the inputs.
    assert floats.usage.prompt_tokens == 5 + 8 + 5

    # Asked for base64, the client gets the little-endian float32 bytes as they are...
    raw = oai.embeddings.create(
        model=done.fine_tuned_model, input=list(SENTENCES), encoding_format="base64"
    )
    decoded = [
        np.frombuffer(base64.b64decode(str(item.embedding)), dtype="<f4") for item in raw.data
    ]
    np.testing.assert_allclose(decoded, vectors, rtol=1e-6)
    # ... and by default it asks for base64 itself and decodes it.
    default = oai.embeddings.create(model=done.fine_tuned_model, input=SENTENCES[0])
    np.testing.assert_allclose(default.data[0].embedding, vectors[0], rtol=1e-6)


def test_the_docs_example_runs_as_written(server: RunningServer, tmp_path: Path) -> None:
    text = DOCS.read_text()
    start = text.index("## Word vectors (word2vec)")
    section = text[start : text.index("\n## ", start + 1)]
    [script] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    corpus = importlib.resources.files("gensim").joinpath("test/test_data/lee_background.cor")
    (tmp_path / "news.txt").write_bytes(corpus.read_bytes())  # one article a line
    ran = subprocess.run(
        [sys.executable, "-c", script.replace("http://127.0.0.1:8000", server.url)],
        cwd=tmp_path,
        env={**os.environ, "OPENMAAS_API_KEY": server.key},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["succeeded news-vectors:1", "32"]
