"""The `truncate_layers` and `prune` optimization methods against a real server with one job
worker: 4-layer tiny BERTs (a classifier, and an encoder in sentence-transformers layout with
CLS pooling) truncated and pruned, each result registered with lineage and measured deltas
and served next to its parent; a structured prune fine-tuned on an uploaded file (the CLI
command of docs/optimization.md); bad settings and inapplicable models refused with 400s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from openmaas import APIError, Client
from openmaas.protocol.optimization import OptimizationJobOut
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import run_cli as cli
from tests.integration.job_servers import start_job_server
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import build_bert, write_sentence_transformers_config

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["what a delight", "a dreary, joyless mess of a film", "ok"]
LAYERS = 4
SPEED_METRICS = (
    "latency_speedup_batch1",
    "throughput_speedup_batch32",
    "p50_latency_ms_batch1",
    "parent_p50_latency_ms_batch1",
    "size_ratio",
)
POSITIVE = ("a joy", "loved it", "wonderful acting", "a delight", "great fun", "moving")
NEGATIVE = ("a bore", "hated it", "dreadful acting", "a mess", "no fun", "tedious")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(tmp_path_factory, "pruning")
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
def classifier(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = build_bert(
        tmp_path_factory.mktemp("classifier") / "bert",
        head="sequence-classification",
        labels=("negative", "positive"),
        seed=3,
        layers=LAYERS,
    )
    sdk.upload("deep-classifier", path, task="text-classification")
    return "deep-classifier"


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers directory that pools the CLS vector and normalizes it (the
    runtime's default without those modules would be mean pooling, unnormalized)."""
    path = build_bert(tmp_path_factory.mktemp("encoder") / "bert", layers=LAYERS, seed=5)
    write_sentence_transformers_config(path, pooling="cls", normalize=True, max_seq_length=64)
    return path


@pytest.fixture(scope="module")
def encoder(sdk: Client, encoder_dir: Path) -> str:
    sdk.upload("deep-encoder", encoder_dir, task="embedding")
    return "deep-encoder"


@pytest.fixture(scope="module")
def training_file(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """reviews.jsonl, uploaded as docs/optimization.md does."""
    lines = [
        json.dumps({"text": f"{phrase}, {ending}", "label": label})
        for ending in ("really", "from start to end", "all the way")
        for phrases, label in ((POSITIVE, "positive"), (NEGATIVE, "negative"))
        for phrase in phrases
    ]
    path = tmp_path_factory.mktemp("data") / "reviews.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    uploaded = cli(server, "datasets", "upload", str(path), "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset = json.loads(uploaded.stdout)
    assert (dataset["status"], dataset["task"]) == ("processed", "text-classification")
    return str(dataset["id"])


def finished(sdk: Client, job_id: str, timeout_s: float = 300.0) -> OptimizationJobOut:
    def check() -> OptimizationJobOut | None:
        job = sdk.get_optimization_job(job_id)
        return job if job.finished else None

    return wait_for(f"optimization job {job_id} to finish", check, timeout_s)


def classify(server: RunningServer, model: str) -> list[dict[str, float]]:
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": model, "input": TEXTS, "top_k": 2},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return [
        {label["label"]: label["score"] for label in item["labels"]}
        for item in answer.json()["data"]
    ]


def infer_labels(server: RunningServer, model: str) -> list[str]:
    body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [3], "data": TEXTS}]}
    answer = httpx.post(
        f"{server.url}/v2/models/{model}/infer", headers=server.headers, json=body, timeout=60
    )
    assert answer.status_code == 200, answer.text
    outputs = {output["name"]: output["data"] for output in answer.json()["outputs"]}
    return [str(label) for label in outputs["LABEL"]]


def assert_measured(metrics: dict[str, float]) -> None:
    assert all(metrics[name] > 0 for name in SPEED_METRICS), metrics
    assert 0 <= metrics["builtin_agreement_with_parent"] <= 1


def test_truncating_a_classifier_keeps_half_its_layers_by_default(
    server: RunningServer, sdk: Client, classifier: str
) -> None:
    """The first command of docs/optimization.md's `truncate_layers`."""
    ran = cli(server, "optimize", "run", classifier, "truncate_layers", "--json")
    assert ran.returncode == 0, ran.stderr
    job = json.loads(ran.stdout)
    assert job["status"] == "succeeded", job["error"]
    assert job["settings"] == {"layers": 2}  # the default, resolved against the parent's 4

    version = sdk.resolve("deep-classifier-truncated")
    assert (version.task, version.runtime) == ("text-classification", "transformers")
    assert version.lineage.transform == "truncate_layers"
    assert version.lineage.source["parent"] == "deep-classifier:1"
    assert version.lineage.source["settings"] == {"layers": 2}
    assert (version.metrics["layers"], version.metrics["parent_layers"]) == (2, 4)
    assert_measured(version.metrics)
    assert version.metrics["size_ratio"] < 1  # two layers' weights fewer

    assert [set(row) for row in classify(server, version.model)] == [
        {"negative", "positive"}
    ] * len(TEXTS)
    assert set(infer_labels(server, version.model)) <= {"negative", "positive"}


def test_a_truncated_sentence_transformers_encoder_pools_as_its_parent(
    sdk: Client, oai: openai.OpenAI, encoder: str, encoder_dir: Path
) -> None:
    job = sdk.create_optimization_job(encoder, "truncate_layers", settings={"layers": 1})
    job = finished(sdk, job.id)
    assert job.status == "succeeded", job.error
    version = sdk.resolve("deep-encoder-truncated")
    assert version.runtime == "transformers"
    assert version.metrics["layers"] == 1
    assert "builtin_mean_cosine_to_parent" in version.metrics

    # What the parent network computes after its first layer, CLS-pooled and normalized.
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    network = AutoModel.from_pretrained(encoder_dir).eval()
    with torch.no_grad():
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        hidden = network(**batch, output_hidden_states=True).hidden_states[1][:, 0]
    expected = torch.nn.functional.normalize(hidden, dim=-1).numpy()
    answer = oai.embeddings.create(model=version.model, input=TEXTS)
    served = np.array([item.embedding for item in answer.data])
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_unstructured_pruning_reaches_its_sparsity_and_serves(
    server: RunningServer, sdk: Client, classifier: str
) -> None:
    """The second `prune` command of docs/optimization.md."""
    ran = cli(
        server,
        *("optimize", "run", classifier, "prune", "--set", "sparsity=0.6"),
        *("--model-name", "deep-classifier-sparse", "--json"),
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"
    version = sdk.resolve("deep-classifier-sparse")
    assert version.lineage.transform == "prune"
    assert version.lineage.source["settings"]["kind"] == "unstructured"
    assert version.metrics["achieved_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert version.metrics["parameter_ratio"] == 1.0  # zeros, not fewer weights
    assert_measured(version.metrics)
    assert len(classify(server, version.model)) == len(TEXTS)


def test_structured_pruning_shrinks_the_tensors_of_an_encoder(
    sdk: Client, oai: openai.OpenAI, encoder: str
) -> None:
    job = sdk.create_optimization_job(
        encoder, "prune", settings={"kind": "structured", "sparsity": 0.5}
    )
    job = finished(sdk, job.id)
    assert job.status == "succeeded", job.error
    version = sdk.resolve("deep-encoder-pruned")
    assert version.metrics["ffn_channels_kept"] == 32  # of the tiny BERT's 64
    assert version.metrics["achieved_sparsity"] == 0.5
    assert version.metrics["parameter_ratio"] < 1
    assert version.metrics["size_ratio"] < 1
    answer = oai.embeddings.create(model=version.model, input=TEXTS)
    vectors = np.array([item.embedding for item in answer.data])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # normalized


def test_a_structured_prune_fine_tunes_on_a_training_file_from_the_cli(
    server: RunningServer, sdk: Client, classifier: str, training_file: str
) -> None:
    """The command of docs/optimization.md."""
    ran = cli(
        server,
        "optimize",
        "run",
        classifier,
        "prune",
        "--set",
        "kind=structured",
        "--set",
        "sparsity=0.5",
        "--set",
        "fine_tune_epochs=2",
        "--training-file",
        training_file,
        "--json",
    )
    assert ran.returncode == 0, ran.stderr
    job = json.loads(ran.stdout)
    assert (job["status"], job["optimized_model"]) == ("succeeded", "deep-classifier-pruned")
    metrics = job["metrics"]
    assert metrics["fine_tune_epochs"] == 2
    assert metrics["fine_tune_examples"] == 2 * 3 * len(POSITIVE)
    assert metrics["achieved_sparsity"] == 0.5
    assert metrics["parameter_ratio"] < 1
    messages = [event.message for event in sdk.optimization_job_events(job["id"]).data]
    assert any(message.startswith("Fine-tune epoch 2/2") for message in messages), messages
    assert [set(row) for row in classify(server, "deep-classifier-pruned")] == [
        {"negative", "positive"}
    ] * len(TEXTS)
    # The same job again fine-tunes alike: shuffling and dropout are seeded.
    again = sdk.wait_for_optimization_job(
        sdk.create_optimization_job(
            classifier,
            "prune",
            settings={"kind": "structured", "sparsity": 0.5, "fine_tune_epochs": 2},
            training_file=training_file,
            model_name="deep-classifier-pruned-again",
        ).id
    )
    assert again.status == "succeeded", again.error
    assert again.metrics["fine_tune_final_loss"] == metrics["fine_tune_final_loss"]
    assert classify(server, "deep-classifier-pruned-again") == classify(
        server, "deep-classifier-pruned"
    )


def test_an_unstructured_prune_keeps_its_zeros_through_the_fine_tune(
    sdk: Client, classifier: str, training_file: str
) -> None:
    job = sdk.create_optimization_job(
        classifier,
        "prune",
        settings={"sparsity": 0.5, "scope": "layer", "fine_tune_epochs": 1},
        training_file=training_file,
        model_name="deep-classifier-sparse-tuned",
    )
    job = finished(sdk, job.id)
    assert job.status == "succeeded", job.error
    assert job.metrics["fine_tune_epochs"] == 1
    # The masks hold while AdamW moves the other weights (and decays the masked ones).
    assert job.metrics["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_bad_settings_name_the_setting(sdk: Client, classifier: str, encoder: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": classifier, "method": "truncate_layers", "settings": {"layers": 4}}, "layers"),
        ({"model": classifier, "method": "truncate_layers", "settings": {"layers": 0}}, "layers"),
        ({"model": classifier, "method": "truncate_layers", "settings": {"depth": 2}}, "depth"),
        ({"model": classifier, "method": "prune", "settings": {"sparsity": 1.5}}, "sparsity"),
        ({"model": classifier, "method": "prune", "settings": {"kind": "heads"}}, "kind"),
        ({"model": classifier, "method": "prune", "settings": {"scope": "row"}}, "scope"),
        (
            {"model": classifier, "method": "prune", "settings": {"learning_rate": 0}},
            "learning_rate",
        ),
        (
            {"model": encoder, "method": "prune", "settings": {"fine_tune_epochs": 1}},
            "fine_tune_epochs",
        ),
    ]
    for body, name in cases:
        with pytest.raises(APIError) as caught:
            sdk.create_optimization_job(**body)
        assert (caught.value.status_code, caught.value.param) == (400, f"settings.{name}"), body
    with pytest.raises(APIError) as caught:
        sdk.create_optimization_job(classifier, "prune", settings={"fine_tune_epochs": 1})
    assert (caught.value.status_code, caught.value.param) == (400, "training_file")


def test_pruning_a_rules_model_names_the_methods_that_apply(sdk: Client) -> None:
    sdk.register_catalog_entry("vader")
    with pytest.raises(APIError) as caught:
        sdk.create_optimization_job("vader", "prune")
    error = caught.value
    assert (error.status_code, error.param, error.code) == (400, "method", "method_not_applicable")
    assert "'prune' does not apply to vader:1" in error.message
    # A rules classifier can still teach a student: the answer names what applies.
    assert error.message.endswith("methods that do: distill")


def test_the_methods_list_says_when_prune_needs_a_file(sdk: Client) -> None:
    methods = {method.name: method for method in sdk.list_optimization_methods()}
    assert methods["truncate_layers"].settings == {"layers": None}
    assert methods["prune"].settings["kind"] == "unstructured"
    assert methods["prune"].needs_training_file is False  # only with fine_tune_epochs > 0
