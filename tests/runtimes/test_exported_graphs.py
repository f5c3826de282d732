"""Graphs exported by the optimization methods pass the runtime conformance suite and answer
as their source model: a tiny transformers tagger on the ONNX runtime, and the platform's own
networks (TextCNN, a BiLSTM pooling its last states, the BiLSTM tagger) on the `openmaas-nn`
runtime from `model.onnx`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from openmaas.nn.graph import GraphNetwork
from openmaas.nn.rnn import RNNClassifier, RNNConfig
from openmaas.nn.saved import save_classifier
from openmaas.nn.tagger import RNNTagger, RNNTaggerConfig
from openmaas.nn.textcnn import TextCNN, TextCNNConfig
from openmaas.nn.vocab import build_vocabulary, vocabulary_size
from openmaas.optimize.graphs import export_transformer
from openmaas.optimize.onnx_methods import GRAPH, SUPPORT_FILES, network_graph
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
from openmaas.runtimes.onnx import OnnxRuntime
from openmaas.runtimes.textnn import TextNetworkModel, TextNetworkRuntime
from tests.runtimes.conformance import TEXTS, check_conformance
from tests.runtimes.tiny_models import BIO_LABELS, build_bert

TAGGED = "token-classification"
CLASSIFIED = "text-classification"


def spans(model: Any) -> list[list[tuple[str, str, int, int]]]:
    return [
        [(e.text, e.label, e.start, e.end) for e in entities]
        for entities in model.extract_entities(list(TEXTS))
    ]


def test_a_transformers_taggers_graph_tags_like_it(tmp_path: Path) -> None:
    checkpoint = build_bert(tmp_path / "bert", head="token-classification", labels=BIO_LABELS)
    graph = tmp_path / "graph"
    graph.mkdir()
    for name in SUPPORT_FILES:
        if (checkpoint / name).is_file():
            shutil.copy(checkpoint / name, graph / name)
    export_transformer(checkpoint, TAGGED, graph / GRAPH)
    exported = check_conformance(
        OnnxRuntime(), ModelSource.for_directory(graph, task=TAGGED, runtime="onnx")
    )
    parent = get_runtime("transformers").load(
        ModelSource.for_directory(checkpoint, task=TAGGED, runtime="transformers"), LoadOptions()
    )
    assert getattr(exported, "labels", ()) == getattr(parent, "labels", ()) == BIO_LABELS
    assert spans(exported) == spans(parent)
    assert any(spans(parent))


def saved_network(directory: Path, architecture: str, network: nn.Module, task: str) -> Path:
    labels = BIO_LABELS if task == TAGGED else ("negative", "positive")
    save_classifier(
        directory,
        architecture,
        network.eval(),
        TOKENIZER,
        labels=labels,
        max_input_tokens=32,
        task=task,
    )
    return directory


TOKENIZER = build_vocabulary(list(TEXTS), max_size=500, min_frequency=1)
VOCABULARY = vocabulary_size(TOKENIZER)


@pytest.mark.parametrize(
    ("architecture", "build", "task"),
    [
        ("textcnn", lambda: TextCNN(TextCNNConfig(VOCABULARY, 2, 16, n_filters=8)), CLASSIFIED),
        (
            "rnn",
            lambda: RNNClassifier(RNNConfig(VOCABULARY, 2, hidden_size=16, pooling="last")),
            CLASSIFIED,
        ),
        ("rnn-tagger", lambda: RNNTagger(RNNTaggerConfig(VOCABULARY, 5, hidden_size=16)), TAGGED),
    ],
)
def test_a_networks_graph_serves_as_the_network(
    tmp_path: Path, architecture: str, build: Callable[[], nn.Module], task: str
) -> None:
    torch.manual_seed(0)
    parent_directory = saved_network(tmp_path / "net", architecture, build(), task)
    graph = tmp_path / "graph"
    graph.mkdir()
    fp32 = network_graph(parent_directory, tmp_path, graph)
    shutil.copy(fp32, graph / GRAPH)
    runtime = TextNetworkRuntime()
    exported = check_conformance(
        runtime, ModelSource.for_directory(graph, task=task, runtime="openmaas-nn")
    )
    assert isinstance(exported, TextNetworkModel)
    assert isinstance(exported.network, GraphNetwork)
    assert not list(graph.glob("*.safetensors"))  # the weights are the graph's
    parent = runtime.load(
        ModelSource.for_directory(parent_directory, task=task, runtime="openmaas-nn"),
        LoadOptions(),
    )
    assert isinstance(parent, TextNetworkModel)
    assert exported.labels == parent.labels
    if task == TAGGED:
        assert spans(exported) == spans(parent)
        return
    expected = [[r.score for r in ranked] for ranked in parent.classify(list(TEXTS))]
    got = [[r.score for r in ranked] for ranked in exported.classify(list(TEXTS))]
    np.testing.assert_allclose(got, expected, atol=1e-5)
