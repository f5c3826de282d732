"""Attention-head pruning (`prune` with `structure: "heads"`) against a real server with one
job worker: a 4-layer tiny BERT classifier pruned and fine-tuned with distillation from the
CLI (the command of docs/optimization.md), pruned again without any file (the weight-norm
proxy) and exported to ONNX; the catalog's all-MiniLM-L6-v2 pruned with gradient importance
on an eval file's texts. Each result serves on its task's routes, its stored tensors are
really smaller, and bad settings are 400s naming the setting."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import torch
from safetensors import safe_open
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from openmaas import APIError, Client
from openmaas.protocol.optimization import OptimizationJobOut
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import run_cli as cli
from tests.integration.job_servers import start_job_server
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import WORDPIECE_FILES, build_bert, minilm_path

TEXTS = ["what a delight", "a dreary, joyless mess of a film", "ok"]
LAYERS, HEADS, HEAD_WIDTH = 4, 4, 8  # the tiny BERT's: 32 wide
POSITIVE = ("a joy", "loved it", "wonderful acting", "a delight", "great fun", "moving")
NEGATIVE = ("a bore", "hated it", "dreadful acting", "a mess", "no fun", "tedious")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(tmp_path_factory, "heads")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
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
def distilbert(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny DistilBERT classifier: a transformers encoder, but not of the BERT family's
    attention layout."""
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=4, hidden_dim=64)
    path = tmp_path_factory.mktemp("distilbert") / "model"
    DistilBertForSequenceClassification(config).save_pretrained(path)
    for name in WORDPIECE_FILES:
        shutil.copy(minilm_path() / name, path / name)
    sdk.upload("tiny-distilbert", path, task="text-classification")
    return "tiny-distilbert"


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
    return str(json.loads(uploaded.stdout)["id"])


def finished(sdk: Client, job_id: str, timeout_s: float = 300.0) -> OptimizationJobOut:
    def check() -> OptimizationJobOut | None:
        job = sdk.get_optimization_job(job_id)
        return job if job.finished else None

    return wait_for(f"optimization job {job_id} to finish", check, timeout_s)


def messages(sdk: Client, job_id: str) -> list[str]:
    return [event.message for event in sdk.optimization_job_events(job_id).data]


def stored_shapes(server: RunningServer, sdk: Client, model: str) -> dict[str, list[int]]:
    """The shapes of the tensors the version's model.safetensors stores, found in the
    server's artifact store by the sha256 its manifest records."""
    version = sdk.resolve(model)
    digest = next(f.sha256 for f in version.files if f.path.endswith("model.safetensors"))
    objects = server.home / "artifacts" / "objects"
    stored = next(
        path
        for path in objects.rglob("model.safetensors")
        if hashlib.sha256(path.read_bytes()).hexdigest() == digest
    )
    with safe_open(stored, "pt") as saved:
        return {name: saved.get_slice(name).get_shape() for name in saved.keys()}  # noqa: SIM118


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


def test_heads_pruned_and_distilled_from_the_cli_serve_with_smaller_tensors(
    server: RunningServer, sdk: Client, classifier: str, training_file: str
) -> None:
    """The heads command of docs/optimization.md."""
    ran = cli(
        server,
        *("optimize", "run", classifier, "prune", "--set", "kind=structured"),
        *("--set", "structure=heads", "--set", "sparsity=0.5", "--set", "fine_tune_epochs=1"),
        *("--training-file", training_file, "--model-name", "deep-classifier-heads", "--json"),
    )
    assert ran.returncode == 0, ran.stderr
    job = json.loads(ran.stdout)
    assert job["status"] == "succeeded", job["error"]
    metrics = job["metrics"]
    assert (metrics["heads_kept"], metrics["parent_heads"]) == (8, LAYERS * HEADS)
    assert metrics["achieved_sparsity"] == 0.5
    assert metrics["head_importance_from_gradients"] == 1
    assert (metrics["distillation_temperature"], metrics["distillation_alpha"]) == (2, 0.5)
    assert metrics["parameter_ratio"] < 1
    # Per head gone: its query, key and value rows (weights and biases) and output columns.
    per_head = 3 * (HEAD_WIDTH * 32 + HEAD_WIDTH) + 32 * HEAD_WIDTH
    assert metrics["parameters_removed"] == 8 * per_head
    assert metrics["size_ratio"] < 1
    assert metrics["latency_speedup_batch1"] > 0
    assert metrics["throughput_speedup_batch32"] > 0
    events = messages(sdk, job["id"])
    assert any("gradients of head gates (Michel et al., 2019)" in m for m in events), events
    assert any("distilling from the parent (temperature 2, alpha 0.5)" in m for m in events)
    assert any(m.startswith("Kept 8 of 16 attention heads") for m in events), events

    version = sdk.resolve("deep-classifier-heads")
    assert version.lineage.source["settings"]["structure"] == "heads"
    shapes = stored_shapes(server, sdk, "deep-classifier-heads")
    widths = [
        shapes[f"bert.encoder.layer.{layer}.attention.self.query.weight"][0]
        for layer in range(LAYERS)
    ]
    assert sum(widths) == 8 * HEAD_WIDTH
    assert all(w % HEAD_WIDTH == 0 and w > 0 for w in widths)
    for layer, width in enumerate(widths):
        prefix = f"bert.encoder.layer.{layer}.attention"
        assert shapes[f"{prefix}.self.value.weight"] == [width, 32]
        assert shapes[f"{prefix}.output.dense.weight"] == [32, width]
    assert [set(row) for row in classify(server, version.model)] == [
        {"negative", "positive"}
    ] * len(TEXTS)
    assert set(infer_labels(server, version.model)) <= {"negative", "positive"}


def test_heads_pruned_without_a_file_use_the_weight_proxy_and_export_to_onnx_and_int8(
    server: RunningServer, sdk: Client, classifier: str
) -> None:
    job = finished(
        sdk,
        sdk.create_optimization_job(
            classifier,
            "prune",
            settings={"kind": "structured", "structure": "heads", "heads_per_layer": 1},
            model_name="deep-classifier-one-head",
        ).id,
    )
    assert job.status == "succeeded", job.error
    assert (job.metrics["heads_kept"], job.metrics["head_importance_from_gradients"]) == (4, 0)
    assert any("the weight-norm proxy" in m for m in messages(sdk, job.id))
    shapes = stored_shapes(server, sdk, "deep-classifier-one-head")
    assert shapes["bert.encoder.layer.3.attention.self.key.weight"] == [HEAD_WIDTH, 32]

    exported = finished(sdk, sdk.create_optimization_job("deep-classifier-one-head", "onnx").id)
    assert exported.status == "succeeded", exported.error
    onnx = sdk.resolve("deep-classifier-one-head-onnx")
    assert onnx.runtime == "onnx"
    assert exported.metrics["export_max_abs_difference"] <= 1e-4
    ours = classify(server, onnx.model)
    theirs = classify(server, "deep-classifier-one-head")
    for row, expected in zip(ours, theirs, strict=True):
        assert row == pytest.approx(expected, abs=1e-4)
    # And that graph quantized to int8 in turn.
    quantized = finished(sdk, sdk.create_optimization_job(onnx.model, "quantize").id)
    assert quantized.status == "succeeded", quantized.error
    assert 0 <= quantized.metrics["builtin_agreement_with_parent"] <= 1
    assert [set(row) for row in classify(server, "deep-classifier-one-head-onnx-int8")] == [
        {"negative", "positive"}
    ] * len(TEXTS)


def test_minilm_heads_pruned_on_an_eval_files_texts_stays_close_to_its_parent(
    server: RunningServer, sdk: Client, training_file: str
) -> None:
    """The catalog's all-MiniLM-L6-v2 (sentence-transformers layout, 6 layers of 12 heads)."""
    sdk.upload("minilm", minilm_path(), task="embedding")
    job = finished(
        sdk,
        sdk.create_optimization_job(
            "minilm",
            "prune",
            settings={"kind": "structured", "structure": "heads", "sparsity": 0.25},
            eval_file=training_file,
        ).id,
    )
    assert job.status == "succeeded", job.error
    assert (job.metrics["heads_kept"], job.metrics["parent_heads"]) == (54, 72)
    assert job.metrics["head_importance_from_gradients"] == 1
    assert any("random projections of the pooled vectors" in m for m in messages(sdk, job.id))
    assert job.metrics["builtin_mean_cosine_to_parent"] >= 0.8
    assert job.metrics["eval_mean_cosine_to_parent"] >= 0.8
    assert job.metrics["size_ratio"] < 1
    shapes = stored_shapes(server, sdk, "minilm-pruned")
    kept = sum(shapes[f"encoder.layer.{i}.attention.self.query.weight"][0] for i in range(6))
    assert kept == 54 * 32  # of 6 x 384

    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as oai:
        parent = oai.embeddings.create(model="minilm", input=TEXTS)
        pruned = oai.embeddings.create(model="minilm-pruned", input=TEXTS)
    ours = np.array([item.embedding for item in pruned.data])
    theirs = np.array([item.embedding for item in parent.data])
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * theirs).sum(axis=1).mean() >= 0.8


def test_bad_heads_settings_name_the_setting(sdk: Client, classifier: str, distilbert: str) -> None:
    heads = {"kind": "structured", "structure": "heads"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"structure": "rows"}, "structure"),
        ({"structure": "heads"}, "structure"),  # kind stays unstructured
        ({**heads, "heads_per_layer": 4}, "heads_per_layer"),  # all 4: removes nothing
        ({**heads, "heads_per_layer": 0}, "heads_per_layer"),
        ({"kind": "structured", "heads_per_layer": 2}, "heads_per_layer"),  # ffn
        ({**heads, "sparsity": 0.99}, "sparsity"),  # would empty a layer
        ({**heads, "sparsity": 0.01}, "sparsity"),  # removes no head
        ({**heads, "temperature": 0}, "temperature"),
        ({**heads, "alpha": 1.5}, "alpha"),
        ({**heads, "distillation": "yes"}, "distillation"),
    ]
    for settings, name in cases:
        with pytest.raises(APIError) as caught:
            sdk.create_optimization_job(classifier, "prune", settings=settings)
        assert (caught.value.status_code, caught.value.param) == (400, f"settings.{name}"), settings
    with pytest.raises(APIError) as caught:
        sdk.create_optimization_job(distilbert, "prune", settings=heads)
    assert (caught.value.status_code, caught.value.param) == (400, "settings.structure")
    assert "BERT-family encoders" in caught.value.message
    sdk.register_catalog_entry("vader")
    with pytest.raises(APIError) as caught:
        sdk.create_optimization_job("vader", "prune", settings=heads)
    error = caught.value
    assert (error.status_code, error.param, error.code) == (400, "method", "method_not_applicable")
