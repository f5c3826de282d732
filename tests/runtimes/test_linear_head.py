"""The linear-head runtime: the catalog's CLINC150 intent head over MiniLM, its encoder opened
through the registry as the server does."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from openmaas.errors import ModelLoadFailed, WrongTask
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.linear_head import LinearHeadModel, LinearHeadRuntime
from tests.runtimes.conformance import check_conformance

SourceOpener = Callable[[str], ModelSource]

# Utterances with one obvious CLINC150 intent each.
OBVIOUS = {
    "what's the weather like tomorrow": "weather",
    "set an alarm for 7 am": "alarm",
    "play some music by the beatles": "play_music",
    "tell me a joke": "tell_joke",
    "how do you say hello in french": "translate",
    "I want to talk to a human": "connect_to_human",
    "what is my bank account balance": "balance",
    "flip a coin": "flip_coin",
}


@pytest.fixture(scope="module")
def intents(catalog_source: SourceOpener, catalog_options: LoadOptions) -> LinearHeadModel:
    model = check_conformance(
        LinearHeadRuntime(), catalog_source("intent-clinc150"), catalog_options
    )
    assert isinstance(model, LinearHeadModel)
    return model


def test_obvious_utterances_get_their_intent(intents: LinearHeadModel) -> None:
    assert len(intents.labels) == 157
    rankings = intents.classify(list(OBVIOUS))
    assert {text: r[0].label for text, r in zip(OBVIOUS, rankings, strict=True)} == OBVIOUS
    for ranking in rankings:
        assert ranking[0].score > 0.5
        assert sum(r.score for r in ranking) == pytest.approx(1.0)


def test_tokens_limits_and_memory_come_from_the_encoder(intents: LinearHeadModel) -> None:
    encoder = intents.encoder
    assert encoder.source.name == "all-minilm-l6-v2"
    texts = ["set an alarm", "x " * 400]
    assert intents.count_tokens(texts) == encoder.count_tokens(texts)
    assert intents.max_input_tokens == encoder.max_input_tokens == 256
    assert intents.memory_bytes > encoder.memory_bytes
    with pytest.raises(WrongTask):
        intents.embed(["x"])


def _copy_head(catalog_source: SourceOpener, target: Path, **changes: object) -> ModelSource:
    """The catalog head's files in a writable directory, with `openmaas.json` edited."""
    head = catalog_source("intent-clinc150")
    shutil.copytree(head.directory, target)
    spec = json.loads((target / "openmaas.json").read_text())
    (target / "openmaas.json").write_text(json.dumps({**spec, **changes}))
    return ModelSource.for_directory(
        target, task="text-classification", runtime="linear-head", name="custom-head"
    )


def test_a_head_can_sit_on_another_encoder_with_ovr_probabilities(
    catalog_source: SourceOpener, catalog_options: LoadOptions, tmp_path: Path
) -> None:
    # The int8 ONNX MiniLM embeds like the fp32 one, so the same head keeps working.
    source = _copy_head(
        catalog_source, tmp_path / "head", encoder="all-minilm-l6-v2-int8", probability="ovr"
    )
    model = check_conformance(LinearHeadRuntime(), source, catalog_options)
    assert isinstance(model, LinearHeadModel)
    assert model.encoder.source.runtime == "onnx"
    rankings = model.classify(list(OBVIOUS))
    assert [r[0].label for r in rankings] == list(OBVIOUS.values())
    assert sum(r.score for r in rankings[0]) == pytest.approx(1.0)
    model.unload()


def test_heads_that_do_not_fit_their_encoder_fail_to_load(
    catalog_source: SourceOpener, catalog_options: LoadOptions, tmp_path: Path
) -> None:
    not_an_encoder = _copy_head(catalog_source, tmp_path / "a", encoder="vader")
    with pytest.raises(ModelLoadFailed, match="not an embedding model"):
        LinearHeadRuntime().load(not_an_encoder, catalog_options)
    bad_probability = _copy_head(catalog_source, tmp_path / "b", probability="argmax")
    with pytest.raises(ModelLoadFailed, match="softmax or ovr"):
        LinearHeadRuntime().load(bad_probability, catalog_options)
    two_labels = _copy_head(catalog_source, tmp_path / "c")
    (tmp_path / "c" / "labels.json").write_text(json.dumps({"labels": ["only", "two"]}))
    with pytest.raises(ModelLoadFailed, match="2 labels do not agree"):
        LinearHeadRuntime().load(two_labels, catalog_options)
