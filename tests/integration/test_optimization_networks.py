"""Optimization jobs over taggers and the platform's own networks, against a real server with
one job worker: a TextCNN, a BiLSTM and a GRU classifier (trained here in a second) and a
BiLSTM tagger exported to ONNX and quantized to int8, served by the `openmaas-nn` runtime on
/v1/classify and /v1/ner beside their parents; a tiny transformers tagger exported and served
by the ONNX runtime with its parent's entities; static int8, calibrated on an uploaded file."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torch import nn

from openmaas import APIError, Client
from openmaas.nn.encoder import EncoderConfig, TransformerEncoderClassifier
from openmaas.nn.rnn import RNNClassifier, RNNConfig
from openmaas.nn.saved import save_classifier
from openmaas.nn.tagger import RNNTagger, RNNTaggerConfig
from openmaas.nn.textcnn import TextCNN, TextCNNConfig
from openmaas.nn.vocab import build_vocabulary, pad_batch, token_ids, vocabulary_size
from openmaas.protocol.optimization import OptimizationJobOut
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import start_job_server
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import BIO_LABELS, build_bert

ROOT = Path(__file__).resolve().parents[2]
POSITIVE = (
    "a wonderful, moving film",
    "I loved every minute of it",
    "great acting and a clever story",
    "what a delight, warm and funny",
    "a beautiful and gripping picture",
    "the best film of the year",
)
NEGATIVE = (
    "a dull, joyless mess",
    "I hated every minute of it",
    "terrible acting and a stupid story",
    "boring, long and badly shot",
    "the worst film of the year",
    "a tedious waste of time",
)
LABELS = ("negative", "positive")
TEXTS = [
    "a warm and clever film",
    "a boring waste of a story",
    "ok",
    "Angela Merkel visited Paris.",
]
NER_TEXTS = ["Angela Merkel visited Paris in May.", "The committee met in Geneva.", "ok"]
Network = Callable[[int], nn.Module]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # One inference thread per model: a second one (torch's or onnxruntime's) mostly spins
    # on a busy machine.
    running = start_job_server(tmp_path_factory, "optimization-networks", {"OPENMAAS_THREADS": "1"})
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


def trained_classifier(directory: Path, architecture: str, network: Network) -> Path:
    """A network of `openmaas.nn` fitted to the 12 phrases above (a few dozen full-batch
    steps), saved as the recipes save theirs."""
    torch.manual_seed(0)
    texts = [*POSITIVE, *NEGATIVE]
    # 2,000 more words, as a real vocabulary has thousands: the embedding table is then most
    # of the bytes, as in a trained network (a 40-word one is smaller than the graph's frame).
    filler = " ".join(f"word{i}" for i in range(2000))
    tokenizer = build_vocabulary([*texts, filler], max_size=5000, min_frequency=1)
    model = network(vocabulary_size(tokenizer))
    ids, lengths = pad_batch(token_ids(tokenizer, texts, max_length=64), min_length=5)
    labels = torch.tensor([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(ids, lengths), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    save_classifier(
        directory, architecture, model.eval(), tokenizer, labels=LABELS, max_input_tokens=64
    )
    return directory


def upload_network(sdk: Client, name: str, directory: Path, task: str) -> str:
    sdk.upload(name, directory, task=task, runtime="openmaas-nn")
    return name


@pytest.fixture(scope="module")
def textcnn(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = trained_classifier(
        tmp_path_factory.mktemp("textcnn") / "net",
        "textcnn",
        lambda vocabulary: TextCNN(
            TextCNNConfig(vocab_size=vocabulary, n_labels=2, embedding_dim=32, n_filters=16)
        ),
    )
    return upload_network(sdk, "sst-textcnn", directory, "text-classification")


@pytest.fixture(scope="module")
def bilstm(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = trained_classifier(
        tmp_path_factory.mktemp("bilstm") / "net",
        "rnn",
        lambda vocabulary: RNNClassifier(
            RNNConfig(vocab_size=vocabulary, n_labels=2, embedding_dim=32, hidden_size=32)
        ),
    )
    return upload_network(sdk, "sst-bilstm", directory, "text-classification")


def finished(sdk: Client, job_id: str, timeout_s: float = 300.0) -> OptimizationJobOut:
    def check() -> OptimizationJobOut | None:
        job = sdk.get_optimization_job(job_id)
        return job if job.finished else None

    return wait_for(f"optimization job {job_id} to finish", check, timeout_s)


def optimized(sdk: Client, model: str, method: str, **options: Any) -> OptimizationJobOut:
    job = finished(sdk, sdk.create_optimization_job(model, method, **options).id)
    assert job.status == "succeeded", job.error
    return job


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


def entities(server: RunningServer, model: str) -> list[list[dict[str, Any]]]:
    answer = httpx.post(
        f"{server.url}/v1/ner",
        headers=server.headers,
        json={"model": model, "input": NER_TEXTS},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return [row["entities"] for row in answer.json()["data"]]


def spans(found: list[list[dict[str, Any]]]) -> list[list[tuple[str, str, int, int]]]:
    return [[(e["text"], e["label"], e["start"], e["end"]) for e in row] for row in found]


def assert_close(
    parent: list[dict[str, float]], child: list[dict[str, float]], tolerance: float
) -> None:
    for expected, got in zip(parent, child, strict=True):
        assert set(got) == set(LABELS)
        assert max(got, key=got.__getitem__) == max(expected, key=expected.__getitem__)
        assert abs(expected["positive"] - got["positive"]) < tolerance, (expected, got)


@pytest.mark.parametrize("fixture", ["textcnn", "bilstm"])
def test_a_network_exported_to_onnx_serves_like_its_parent(
    server: RunningServer, sdk: Client, request: pytest.FixtureRequest, fixture: str
) -> None:
    parent: str = request.getfixturevalue(fixture)
    job = optimized(sdk, parent, "onnx")
    version = sdk.resolve(f"{parent}-onnx")
    assert (version.task, version.runtime) == ("text-classification", "openmaas-nn")
    assert version.lineage.transform == "onnx"
    assert version.metrics["export_max_abs_difference"] <= 1e-4
    assert version.metrics["builtin_agreement_with_parent"] == 1.0
    assert job.optimized_model == f"{parent}-onnx"
    expected = probabilities(server, parent)
    assert max(row["positive"] for row in expected) > 0.8  # trained: confident somewhere
    assert_close(expected, probabilities(server, f"{parent}-onnx"), 1e-4)


@pytest.mark.parametrize("fixture", ["textcnn", "bilstm"])
def test_a_quantized_network_is_smaller_and_agrees_with_its_parent(
    server: RunningServer, sdk: Client, request: pytest.FixtureRequest, fixture: str
) -> None:
    parent: str = request.getfixturevalue(fixture)
    optimized(sdk, parent, "quantize")
    version = sdk.resolve(f"{parent}-int8")
    assert version.runtime == "openmaas-nn"
    assert version.lineage.source["settings"]["mode"] == "dynamic"
    assert version.metrics["builtin_agreement_with_parent"] >= 0.9
    assert version.metrics["size_ratio"] < 1.0
    assert_close(probabilities(server, parent), probabilities(server, f"{parent}-int8"), 0.05)


def test_a_textcnn_pruned_structurally_loses_filters_and_serves(
    server: RunningServer, sdk: Client, textcnn: str, bilstm: str
) -> None:
    job = sdk.wait_for_optimization_job(
        sdk.create_optimization_job(
            textcnn, "prune", settings={"kind": "structured", "sparsity": 0.5}
        ).id
    )
    assert job.status == "succeeded", job.error
    version = sdk.resolve(f"{textcnn}-pruned")
    assert version.runtime == "openmaas-nn"
    assert version.metrics["filters_kept"] == 8  # of 16 per width
    assert version.metrics["achieved_sparsity"] == 0.5
    assert version.metrics["parameter_ratio"] < 1.0
    assert version.metrics["size_ratio"] < 1.0
    served = probabilities(server, f"{textcnn}-pruned")
    assert [set(row) for row in served] == [set(LABELS)] * len(served)
    for body, param in (
        ({"settings": {"kind": "unstructured"}}, "settings.kind"),
        ({"settings": {"kind": "structured", "fine_tune_epochs": 1}}, "settings.fine_tune_epochs"),
    ):
        with pytest.raises(APIError) as refused:
            sdk.create_optimization_job(textcnn, "prune", training_file=None, **body)  # type: ignore[arg-type]
        assert (refused.value.status_code, refused.value.param) == (400, param)
    with pytest.raises(APIError) as not_applicable:
        sdk.create_optimization_job(bilstm, "prune", settings={"kind": "structured"})
    assert (not_applicable.value.status_code, not_applicable.value.param) == (400, "method")


def test_a_gru_reading_its_last_states_and_an_encoder_export_faithfully(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    networks: dict[str, tuple[str, Network]] = {
        "sst-gru": (
            "rnn",
            lambda vocabulary: RNNClassifier(
                RNNConfig(vocab_size=vocabulary, n_labels=2, cell="gru", pooling="last")
            ),
        ),
        "sst-encoder": (
            "transformer-encoder",
            lambda vocabulary: TransformerEncoderClassifier(
                EncoderConfig(vocab_size=vocabulary, n_labels=2, d_model=32, ff_dim=64)
            ),
        ),
    }
    for name, (architecture, network) in networks.items():
        directory = trained_classifier(tmp_path / name, architecture, network)
        upload_network(sdk, name, directory, "text-classification")
        optimized(sdk, name, "onnx")
        assert sdk.resolve(f"{name}-onnx").metrics["export_max_abs_difference"] <= 1e-4
        assert_close(probabilities(server, name), probabilities(server, f"{name}-onnx"), 1e-4)


def test_a_bilstm_tagger_exported_and_quantized_tags_like_its_parent(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    tokenizer = build_vocabulary([*NER_TEXTS, *POSITIVE], max_size=200, min_frequency=1)
    network = RNNTagger(RNNTaggerConfig(vocab_size=vocabulary_size(tokenizer), n_labels=5))
    # Random weights give nearly tied tag scores, which int8's rounding flips at will (the
    # agreement moved with onnxruntime releases); a wider head makes the tags decisive, as
    # a trained tagger's are.
    with torch.no_grad():
        network.head.weight.mul_(20.0)
    save_classifier(
        tmp_path / "tagger",
        "rnn-tagger",
        network.eval(),
        tokenizer,
        labels=BIO_LABELS,
        max_input_tokens=64,
        task="token-classification",
    )
    upload_network(sdk, "nn-tagger", tmp_path / "tagger", "token-classification")
    optimized(sdk, "nn-tagger", "onnx")
    optimized(sdk, "nn-tagger", "quantize")
    exported = sdk.resolve("nn-tagger-onnx")
    assert (exported.task, exported.runtime) == ("token-classification", "openmaas-nn")
    assert exported.metrics["builtin_entity_agreement_with_parent"] == 1.0
    parent = entities(server, "nn-tagger")
    assert any(parent), "a random tagger still tags some pieces"
    assert spans(entities(server, "nn-tagger-onnx")) == spans(parent)
    quantized = sdk.resolve("nn-tagger-int8").metrics
    assert 0.5 <= quantized["builtin_entity_agreement_with_parent"] <= 1.0


def test_a_transformers_tagger_exported_to_onnx_finds_its_parents_entities(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    path = build_bert(tmp_path / "bert", head="token-classification", labels=BIO_LABELS, seed=5)
    sdk.upload("tiny-tagger", path, task="token-classification")
    optimized(sdk, "tiny-tagger", "onnx")
    version = sdk.resolve("tiny-tagger-onnx")
    assert (version.task, version.runtime) == ("token-classification", "onnx")
    assert version.metrics["export_max_abs_difference"] <= 1e-4
    assert version.metrics["builtin_entity_agreement_with_parent"] == 1.0
    parent, child = entities(server, "tiny-tagger"), entities(server, "tiny-tagger-onnx")
    assert any(parent)
    assert spans(child) == spans(parent)
    for expected, got in zip(parent, child, strict=True):
        for a, b in zip(expected, got, strict=True):
            assert abs(a["score"] - b["score"]) < 1e-4
    optimized(sdk, "tiny-tagger", "quantize")
    quantized = sdk.resolve("tiny-tagger-int8")
    assert quantized.runtime == "onnx"
    assert 0 <= quantized.metrics["builtin_entity_agreement_with_parent"] <= 1


@pytest.fixture(scope="module")
def phrases_file(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "phrases.jsonl"
    lines = [
        json.dumps({"text": text, "label": label})
        for texts, label in ((POSITIVE, "positive"), (NEGATIVE, "negative"))
        for text in texts
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = sdk.upload_dataset(path)
    assert (dataset.status, dataset.task) == ("processed", "text-classification")
    return dataset.id


def test_static_int8_calibrates_on_the_jobs_file(
    server: RunningServer, sdk: Client, tmp_path: Path, phrases_file: str
) -> None:
    path = build_bert(
        tmp_path / "bert", head="sequence-classification", labels=("negative", "positive"), seed=3
    )
    sdk.upload("tiny-sentiment", path, task="text-classification")
    settings = {"mode": "static", "calibration": "percentile"}
    job = optimized(
        sdk, "tiny-sentiment", "quantize", settings=settings, training_file=phrases_file
    )
    version = sdk.resolve("tiny-sentiment-int8")
    assert version.runtime == "onnx"
    assert version.lineage.source["settings"]["mode"] == "static"
    assert 0 <= version.metrics["builtin_agreement_with_parent"] <= 1
    messages = [event.message for event in sdk.optimization_job_events(job.id).data]
    assert any("Calibrating activations on 12 texts (percentile)" in m for m in messages)
    assert [set(row) for row in probabilities(server, "tiny-sentiment-int8")] == [
        set(LABELS)
    ] * len(TEXTS)


def test_static_int8_of_a_network_calibrates_on_the_eval_file(
    server: RunningServer, sdk: Client, textcnn: str, phrases_file: str
) -> None:
    optimized(
        sdk,
        textcnn,
        "quantize",
        settings={"mode": "static"},
        eval_file=phrases_file,
        model_name="sst-textcnn-static",
    )
    version = sdk.resolve("sst-textcnn-static")
    assert (version.runtime, version.lineage.source["settings"]["calibration"]) == (
        "openmaas-nn",
        "minmax",
    )
    assert version.metrics["builtin_agreement_with_parent"] >= 0.9
    assert_close(probabilities(server, textcnn), probabilities(server, "sst-textcnn-static"), 0.1)


def test_static_int8_without_a_file_or_with_a_wrong_setting_is_a_400(
    sdk: Client, textcnn: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"settings": {"mode": "static"}}, "training_file"),
        ({"settings": {"mode": "qat"}}, "settings.mode"),
        ({"settings": {"calibration": "entropy"}}, "settings.calibration"),
    ]
    for options, param in cases:
        with pytest.raises(APIError) as caught:
            sdk.create_optimization_job(textcnn, "quantize", **options)
        assert (caught.value.status_code, caught.value.param) == (400, param), options


def test_the_methods_list_the_networks_runtime(sdk: Client) -> None:
    methods = {method.name: method for method in sdk.list_optimization_methods()}
    for name in ("onnx", "quantize"):
        assert "openmaas-nn" in methods[name].runtimes
        assert "token-classification" in methods[name].tasks
    assert methods["quantize"].settings["mode"] == "dynamic"


def test_a_network_of_an_architecture_the_export_does_not_handle_is_a_400(
    sdk: Client, tmp_path: Path
) -> None:
    directory = trained_classifier(
        tmp_path / "net",
        "textcnn",
        lambda vocabulary: TextCNN(TextCNNConfig(vocab_size=vocabulary, n_labels=2)),
    )
    # As a recipe records it: an architecture added later, with no checked export yet.
    sdk.upload(
        "capsule-net",
        directory,
        task="text-classification",
        runtime="openmaas-nn",
        params={"architecture": "capsule"},
    )
    for method in ("onnx", "quantize"):
        with pytest.raises(APIError) as caught:
            sdk.create_optimization_job("capsule-net", method)
        assert (caught.value.status_code, caught.value.param) == (400, "method")
        assert "does not apply" in caught.value.message
