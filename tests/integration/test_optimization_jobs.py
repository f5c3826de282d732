"""Optimization jobs against a real server with one job worker: a tiny BERT encoder and
classifier exported to ONNX and quantized to int8, each result registered as a new version
with lineage and measured deltas, and served next to its parent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from openmaas import APIError, Client
from openmaas.protocol.optimization import OptimizationJobOut
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import run_cli as cli
from tests.integration.job_servers import start_job_server
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import build_bert, minilm_path

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["what a delight", "a dreary, joyless mess of a film", "ok"]
SPEED_METRICS = (
    "p50_latency_ms_batch1",
    "parent_p50_latency_ms_batch1",
    "throughput_per_s_batch32",
    "parent_throughput_per_s_batch32",
    "size_mb",
    "parent_size_mb",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # One inference thread per served model: a second one (torch's or onnxruntime's) mostly
    # spins on a busy machine. The jobs' own measurements use OPENMAAS_TRAINING_THREADS.
    running = start_job_server(tmp_path_factory, "optimization", {"OPENMAAS_THREADS": "1"})
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
def encoder(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = build_bert(tmp_path_factory.mktemp("encoder") / "bert")
    sdk.upload("tiny-encoder", path, task="embedding", params={"normalize": "l2"})
    return "tiny-encoder"


@pytest.fixture(scope="module")
def classifier(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = build_bert(
        tmp_path_factory.mktemp("classifier") / "bert",
        head="sequence-classification",
        labels=("negative", "positive"),
        seed=3,
    )
    sdk.upload("tiny-classifier", path, task="text-classification")
    return "tiny-classifier"


def finished(sdk: Client, job_id: str, timeout_s: float = 300.0) -> OptimizationJobOut:
    def check() -> OptimizationJobOut | None:
        job = sdk.get_optimization_job(job_id)
        return job if job.finished else None

    return wait_for(f"optimization job {job_id} to finish", check, timeout_s)


def embeddings(oai: openai.OpenAI, model: str) -> np.ndarray[Any, Any]:
    answer = oai.embeddings.create(model=model, input=TEXTS)
    return np.array([item.embedding for item in answer.data])


def probabilities(server: RunningServer, model: str) -> list[dict[str, float]]:
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


def test_an_onnx_job_registers_an_onnx_version_that_embeds_like_its_parent(
    server: RunningServer, sdk: Client, oai: openai.OpenAI, encoder: str
) -> None:
    created = httpx.post(
        f"{server.url}/v1/optimization/jobs",
        headers=server.headers,
        json={"model": encoder, "method": "onnx"},
        timeout=60,
    )
    assert created.status_code == 201, created.text
    job = finished(sdk, created.json()["id"])
    assert job.status == "succeeded", job.error
    assert job.optimized_model == "tiny-encoder-onnx"
    assert job.parent_version == "tiny-encoder:1"

    version = sdk.resolve("tiny-encoder-onnx")
    assert (version.task, version.runtime) == ("embedding", "onnx")
    assert version.lineage.transform == "onnx"
    assert version.lineage.job_id == job.id
    assert version.lineage.source["parent"] == "tiny-encoder:1"
    assert version.lineage.source["settings"] == {"atol": 1e-4}
    assert version.metrics["export_max_abs_difference"] <= 1e-4
    assert version.metrics["builtin_mean_cosine_to_parent"] > 0.9999
    assert all(version.metrics[name] > 0 for name in SPEED_METRICS)
    assert version.metrics["measured_threads"] == 1  # onnxruntime too, not every core
    assert version.params["normalize"] == "l2"

    parent, optimized = embeddings(oai, encoder), embeddings(oai, "tiny-encoder-onnx")
    np.testing.assert_allclose(optimized, parent, atol=1e-4)

    listed = sdk.list_optimization_jobs()
    assert job.id in [item.id for item in listed.data]
    messages = [event.message for event in sdk.optimization_job_events(job.id).data]
    assert any(message.startswith("Export validated") for message in messages), messages


def test_a_quantize_job_over_a_classifier_agrees_with_its_parent(
    server: RunningServer, sdk: Client, classifier: str
) -> None:
    job = sdk.create_optimization_job(
        classifier, "quantize", model_name="tiny-classifier-fast", alias="candidate"
    )
    job = finished(sdk, job.id)
    assert job.status == "succeeded", job.error
    version = sdk.resolve("tiny-classifier-fast@candidate")
    assert (version.task, version.runtime) == ("text-classification", "onnx")
    assert version.lineage.transform == "quantize"
    assert version.lineage.source["settings"]["per_channel"] is True
    assert 0 <= version.metrics["builtin_agreement_with_parent"] <= 1
    assert version.metrics["size_mb"] > 0

    parent = probabilities(server, classifier)
    quantized = probabilities(server, "tiny-classifier-fast")
    assert [set(row) for row in quantized] == [{"negative", "positive"}] * len(TEXTS)
    for expected, got in zip(parent, quantized, strict=True):
        assert abs(expected["positive"] - got["positive"]) < 0.05


def test_an_eval_file_measures_accuracy_and_f1_beside_the_parent(
    server: RunningServer, sdk: Client, classifier: str, tmp_path: Path
) -> None:
    texts = [f"{word} film number {i}" for i, word in enumerate(["good", "bad", "dull"] * 8)]
    labels = ["positive" if i % 3 == 0 else "negative" for i in range(len(texts))]
    path = tmp_path / "eval.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True)
        )
    )
    eval_file = sdk.upload_dataset(path).id
    job = sdk.create_optimization_job(
        classifier, "quantize", model_name="tiny-classifier-evaluated", eval_file=eval_file
    )
    assert job.eval_file == eval_file
    job = finished(sdk, job.id)
    assert job.status == "succeeded", job.error
    metrics = sdk.resolve("tiny-classifier-evaluated").metrics
    # Recomputed from what each version serves on the same texts.
    for model, prefix in ((classifier, "parent_eval_"), ("tiny-classifier-evaluated", "eval_")):
        answer = httpx.post(
            f"{server.url}/v1/classify",
            headers=server.headers,
            json={"model": model, "input": texts},
            timeout=60,
        )
        predicted = [item["labels"][0]["label"] for item in answer.json()["data"]]
        accuracy = sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels)
        assert metrics[f"{prefix}accuracy"] == pytest.approx(accuracy)
        assert 0 <= metrics[f"{prefix}macro_f1"] <= 1
    assert metrics["eval_accuracy_delta"] == pytest.approx(
        metrics["eval_accuracy"] - metrics["parent_eval_accuracy"]
    )


def test_an_onnx_version_can_be_quantized_in_turn(
    sdk: Client, oai: openai.OpenAI, encoder: str
) -> None:
    onnx_parent = sdk.create_optimization_job(encoder, "onnx", model_name="tiny-encoder-fp32")
    assert finished(sdk, onnx_parent.id).status == "succeeded"
    job = finished(sdk, sdk.create_optimization_job("tiny-encoder-fp32", "quantize").id)
    assert job.status == "succeeded", job.error
    version = sdk.resolve("tiny-encoder-fp32-int8")
    assert version.lineage.source["parent"] == "tiny-encoder-fp32:1"
    assert "export_max_abs_difference" not in version.metrics  # nothing was exported
    parent = embeddings(oai, "tiny-encoder-fp32")
    quantized = embeddings(oai, "tiny-encoder-fp32-int8")
    cosine = (parent * quantized).sum(axis=1)  # both l2-normalized
    assert cosine.min() > 0.9


def test_minilm_quantized_to_int8_keeps_its_vectors_and_is_smaller(
    sdk: Client, oai: openai.OpenAI
) -> None:
    """The packaged all-MiniLM-L6-v2 (a sentence-transformers directory: pooling and
    normalization from its modules), exported and quantized in one job."""
    sdk.upload("minilm", minilm_path(), task="embedding")
    job = finished(sdk, sdk.create_optimization_job("minilm", "quantize").id)
    assert job.status == "succeeded", job.error
    version = sdk.resolve("minilm-int8")
    assert (version.params["pooling"], version.params["normalize"]) == ("mean", "l2")
    assert version.metrics["export_max_abs_difference"] <= 1e-4
    assert version.metrics["builtin_mean_cosine_to_parent"] >= 0.98
    assert version.metrics["size_ratio"] < 0.75  # the encoder's matrices in int8
    # Loading MiniLM's 90 MB of fp32 weights shows in the worker's memory.
    assert version.metrics["parent_resident_mb"] > 30
    assert version.metrics["resident_mb"] >= 0
    parent, quantized = embeddings(oai, "minilm"), embeddings(oai, "minilm-int8")
    assert (parent * quantized).sum(axis=1).mean() >= 0.98


def test_bad_requests_name_the_problem(sdk: Client, encoder: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": encoder, "method": "sparsify"}, "method"),
        ({"model": encoder, "method": "onnx", "eval_file": "file-nope"}, "eval_file"),
        ({"model": encoder, "method": "onnx", "training_file": "file-nope"}, "training_file"),
        ({"model": "no-such-model", "method": "onnx"}, "model"),
        ({"model": encoder, "method": "onnx", "settings": {"bits": 4}}, "settings.bits"),
        (
            {"model": encoder, "method": "quantize", "settings": {"weight_type": "int4"}},
            "settings.weight_type",
        ),
        ({"model": "tiny-encoder-onnx", "method": "onnx"}, "method"),
    ]
    for body, param in cases:
        with pytest.raises(APIError) as caught:
            sdk.create_optimization_job(**body)
        assert (caught.value.status_code, caught.value.param) == (400, param), body


def test_the_methods_are_listed_with_their_settings(server: RunningServer, sdk: Client) -> None:
    methods = {method.name: method for method in sdk.list_optimization_methods()}
    assert {"onnx", "quantize"} <= set(methods)
    assert methods["quantize"].settings["per_channel"] is True
    assert "onnx" in methods["quantize"].runtimes
    listed = cli(server, "optimize", "methods")
    assert listed.returncode == 0, listed.stderr
    assert "per_channel=true" in listed.stdout


def test_another_kinds_job_is_not_an_optimization_job(sdk: Client) -> None:
    with pytest.raises(APIError) as caught:
        sdk.get_optimization_job("ftjob-000000000000000000000000")
    assert caught.value.status_code == 404


def test_an_export_outside_the_tolerance_fails_the_job_and_registers_nothing(
    sdk: Client, encoder: str
) -> None:
    job = sdk.create_optimization_job(
        encoder, "onnx", settings={"atol": 1e-12}, model_name="tiny-encoder-strict"
    )
    job = finished(sdk, job.id)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error["code"] == "optimization_failed"
    assert "above the tolerance atol=1e-12" in job.error["message"]
    with pytest.raises(APIError) as caught:
        sdk.resolve("tiny-encoder-strict")
    assert caught.value.status_code == 404


def test_the_cli_runs_a_job_waits_for_it_and_lists_it(
    server: RunningServer, classifier: str
) -> None:
    ran = cli(
        server,
        "optimize",
        "run",
        classifier,
        "onnx",
        "--set",
        "atol=0.001",
        "--model-name",
        "tiny-classifier-cli",
        "--json",
    )
    assert ran.returncode == 0, ran.stderr
    job = json.loads(ran.stdout)
    assert (job["status"], job["optimized_model"]) == ("succeeded", "tiny-classifier-cli:1")
    assert job["settings"] == {"atol": 0.001}
    assert job["metrics"]["builtin_agreement_with_parent"] == 1.0
    listed = cli(server, "optimize", "list")
    assert listed.returncode == 0, listed.stderr
    assert job["id"] in listed.stdout
