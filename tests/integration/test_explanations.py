"""`/v1/explain` against a real server with one job worker: a TextCNN and a BiLSTM tagger
trained here through the training API (generated reviews, template CoNLL sentences), a tiny
random BERT classifier and tagger (subword tokens summed into words), and the catalog's
VADER rules (occlusion through its normal scoring). Integrated gradients and occlusion, the
SDK and the CLI, and the bad requests named by the field they concern.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import APIError, Client
from openmaas.protocol.explanations import ExplainResponse
from tests.integration.conftest import RunningServer, assert_api_error, stop_server
from tests.integration.job_servers import blocks, cli_env, run_cli, run_script, start_job_server
from tests.ner_data import conll, sentences
from tests.runtimes.tiny_models import BIO_LABELS, build_bert
from tests.sentiment_data import jsonl, reviews

MAX_WORDS = 40  # the server's OPENMAAS_EXPLAIN_MAX_WORDS here: small, to be passed easily
SMALL_CNN = {"n_epochs": 4, "embedding_dim": 32, "n_filters": 16, "batch_size": 16}
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
DOCS = Path(__file__).resolve().parents[2] / "docs" / "explanations.md"
NER_TEXT = "Nelson Mandela met Barack Obama in Buenos Aires."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(
        tmp_path_factory,
        "explanations",
        # One inference thread per model: a second one mostly spins on a busy machine.
        {"OPENMAAS_EXPLAIN_MAX_WORDS": str(MAX_WORDS), "OPENMAAS_THREADS": "1"},
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def trained(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A TextCNN on 400 generated reviews and a BiLSTM tagger on 120 template sentences,
    both queued at once and trained by the worker one after the other."""
    data = tmp_path_factory.mktemp("explain-data")
    (data / "reviews.jsonl").write_bytes(jsonl(reviews(400, seed=0)))
    (data / "ner.conll").write_text(conll(sentences(120, seed=0)), encoding="utf-8")
    jobs = {
        "sentiment": sdk.create_training_job(
            "textcnn",
            sdk.upload_dataset(data / "reviews.jsonl").id,
            hyperparameters=SMALL_CNN,
            model_name="sentiment",
            seed=0,
        ),
        "tagger": sdk.create_training_job(
            "bilstm_tagger",
            sdk.upload_dataset(data / "ner.conll").id,
            hyperparameters=TINY_TAGGER,
            model_name="tagger",
            seed=0,
        ),
    }
    for job in jobs.values():
        done = sdk.wait_for_training_job(job.id, poll_s=0.2, timeout_s=240)
        assert done.status == "succeeded", done.error
    return {name: f"{name}:1" for name in jobs}


@pytest.fixture(scope="module")
def tiny(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    sdk.upload(
        "tiny-classifier",
        build_bert(root / "cls", head="sequence-classification", labels=("neg", "pos")),
    )
    sdk.upload(
        "tiny-tagger", build_bert(root / "tag", head="token-classification", labels=BIO_LABELS)
    )
    return {"classifier": "tiny-classifier", "tagger": "tiny-tagger"}


@pytest.fixture(scope="module")
def vader(sdk: Client) -> str:
    sdk.register_catalog_entry("vader")
    sdk.register_catalog_entry("textrank")  # a summarizer: no labels to explain
    return "vader"


def explain(server: RunningServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/explain", headers=server.headers, json=body, timeout=60)


def explained(server: RunningServer, body: dict[str, Any]) -> ExplainResponse:
    answer = explain(server, body)
    assert answer.status_code == 200, answer.text
    result = ExplainResponse.model_validate(answer.json())
    for word in result.words:  # words as written, offsets into the input
        assert body["input"][word.start : word.end] == word.text
    return result


def top(result: ExplainResponse) -> str:
    return max(result.words, key=lambda w: w.score).text


def bottom(result: ExplainResponse) -> str:
    return min(result.words, key=lambda w: w.score).text


def classify(server: RunningServer, model: str, text: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": model, "input": text},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


# -- the platform's networks, trained through the training API --------------------------------


def test_a_trained_textcnn_is_explained_by_its_opinion_word(
    server: RunningServer, trained: dict[str, str]
) -> None:
    model, text = trained["sentiment"], "The acting was really SUPERB, from start to finish"
    served = classify(server, model, text)
    by_gradients = explained(server, {"model": model, "input": text})
    assert (by_gradients.method, by_gradients.target.label) == ("integrated-gradients", "positive")
    assert served["data"][0]["label"] == "positive"
    assert by_gradients.target.score == pytest.approx(served["data"][0]["score"], abs=1e-6)
    assert [w.text for w in by_gradients.words][:5] == ["The", "acting", "was", "really", "SUPERB"]
    assert top(by_gradients) == "SUPERB"
    assert by_gradients.delta is not None
    assert by_gradients.delta < 0.05
    assert by_gradients.passes == 32
    # Metered as /v1/classify meters the same text: its tokens, once.
    assert by_gradients.usage.prompt_tokens == served["usage"]["prompt_tokens"]

    by_occlusion = explained(server, {"model": model, "input": text, "method": "occlusion"})
    assert (by_occlusion.method, top(by_occlusion)) == ("occlusion", "SUPERB")
    assert by_occlusion.passes == len(by_occlusion.words) + 1

    # Toward the other label the opinion word weighs most against it.
    against = explained(server, {"model": model, "input": text, "target": "negative"})
    assert against.target.label == "negative"
    assert against.target.score == pytest.approx(1 - by_gradients.target.score, abs=1e-6)
    assert bottom(against) == "SUPERB"


def test_a_trained_tagger_explains_its_entities(
    server: RunningServer, sdk: Client, trained: dict[str, str]
) -> None:
    model = trained["tagger"]
    default = sdk.explain(model, NER_TEXT)
    span = default.target.span
    assert default.method == "integrated-gradients"
    assert span is not None
    assert default.target.label in {"PER", "LOC"}
    inside = [w.score for w in default.words if w.start >= span.start and w.end <= span.end]
    assert inside
    assert sum(inside) > 0  # the entity's own words support it
    assert default.delta is not None
    assert default.delta < 0.05

    asked = sdk.explain(model, NER_TEXT, target="LOC", span=(35, 47), method="occlusion")
    assert asked.target.label == "LOC"
    assert asked.target.span is not None
    assert (asked.target.span.start, asked.target.span.end) == (35, 47)
    assert top(asked) in {"Buenos", "Aires", "in"}
    assert asked.target.score > 0.5

    with pytest.raises(APIError) as error:
        sdk.explain(model, "the weather was mild on monday")
    assert_api_error(error, 400, "invalid_request")
    assert error.value.param == "span"
    assert "finds no entity" in error.value.message


# -- transformers: subword pieces summed into the words as written -----------------------------


def test_transformers_attributions_come_as_words(
    server: RunningServer, tiny: dict[str, str]
) -> None:
    text = "Unbelievably dull, don't watch it!"
    for method in ("integrated-gradients", "occlusion"):
        result = explained(
            server, {"model": tiny["classifier"], "input": text, "target": "pos", "method": method}
        )
        assert [w.text for w in result.words] == [
            "Unbelievably",
            "dull",
            ",",
            "don't",
            "watch",
            "it",
            "!",
        ]
        assert result.target.label == "pos"
    tagged = explained(
        server,
        {
            "model": tiny["tagger"],
            "input": NER_TEXT,
            "target": "PER",
            "span": {"start": 0, "end": 6},
        },
    )
    assert tagged.method == "integrated-gradients"
    assert tagged.target.span is not None
    assert (
        tagged.target.span.start,
        tagged.target.span.end,
    ) == (0, 6)
    assert tagged.delta is not None
    assert tagged.delta < 0.05


# -- any model that returns scores: occlusion ------------------------------------------------


def test_a_rule_model_is_explained_by_occlusion(server: RunningServer, vader: str) -> None:
    text = "The food was great but the service was awful"
    result = explained(server, {"model": vader, "input": text, "target": "positive"})
    assert result.method == "occlusion"
    assert top(result) == "great"
    refused = explain(server, {"model": vader, "input": text, "method": "integrated-gradients"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "method"
    assert "use occlusion" in error["message"]


# -- bad requests: 400 naming the field and the choices --------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"target": "joyful"}, "target", "use one of negative, neutral, positive"),
        ({"method": "shap"}, "method", "'integrated-gradients' or 'occlusion'"),
        ({"span": {"start": 0, "end": 3}}, "span", "leave span out"),
        ({"span": {"start": 3, "end": 1}}, "span", "must be past start"),
        ({"input": " ".join(["good"] * (MAX_WORDS + 1))}, "input", f"at most {MAX_WORDS}"),
        ({"input": "   "}, "input", "empty"),
        ({"model": "textrank"}, "model", "/v1/explain with a text needs a text-classification"),
    ],
)
def test_bad_requests_name_the_field(
    server: RunningServer,
    vader: str,
    body: dict[str, Any],
    param: str,
    words: str,
) -> None:
    answer = explain(server, {"model": vader, "input": "a fine day", **body})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param, error
    assert words in error["message"], error


def test_explanations_need_the_inference_scope(
    server: RunningServer, sdk: Client, vader: str
) -> None:
    reader = sdk.create_key("explain-reader", ["models:read"]).key
    answer = httpx.post(
        f"{server.url}/v1/explain",
        headers={"Authorization": f"Bearer {reader}"},
        json={"model": vader, "input": "a fine day"},
        timeout=60,
    )
    assert answer.status_code == 403, answer.text


# -- the CLI ----------------------------------------------------------------------------------


def test_the_cli_explains_as_a_table_and_as_json(server: RunningServer, vader: str) -> None:
    table = run_cli(server, "explain", vader, "What a wonderful day")
    assert table.returncode == 0, table.stderr
    assert "wonderful" in table.stdout
    assert "occlusion" in table.stdout
    raw = run_cli(
        server, "explain", vader, "What a wonderful day", "--target", "positive", "--json"
    )
    assert raw.returncode == 0, raw.stderr
    answer = json.loads(raw.stdout)
    assert answer["target"]["label"] == "positive"
    assert max(answer["words"], key=lambda w: w["score"])["text"] == "wonderful"


# -- docs/explanations.md, run as written ----------------------------------------------------


def test_the_docs_examples_run_as_written(
    server: RunningServer, trained: dict[str, str], vader: str, tmp_path: Path
) -> None:
    text = DOCS.read_text(encoding="utf-8")
    shell = blocks(text, "bash")[0]  # the second is the image section's
    ran = run_script(server, shell, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "awful" in ran.stdout
    assert ran.stdout.splitlines()[-1] == "occlusion negative awful"
    script, printed = blocks(text, "python")[0], blocks(text, "text")[0]
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=cli_env(server),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == printed
