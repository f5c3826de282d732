"""The openmaas-nn runtime on networks trained in the test (a few hundred SST-2 phrases, one
epoch, tiny sizes): conformance for each architecture, registry detection, tokens counted
with the model's own word-level tokenizer, and load failures that name the problem."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from openmaas.auth.entities import SYSTEM
from openmaas.errors import ModelLoadFailed
from openmaas.nn.saved import LONGEST_INPUT_TOKENS
from openmaas.nn.vocab import PAD_ID, UNKNOWN_ID, build_vocabulary, pad_batch, token_ids
from openmaas.registry.composition import Registry
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
from openmaas.runtimes.textnn import TextNetworkModel, TextNetworkRuntime
from openmaas.training.recipe import TrainingContext
from openmaas.training.recipes import RECIPES
from tests.conftest import SHARED_DATASETS
from tests.runtimes.conformance import check_conformance

SST2 = (SHARED_DATASETS or Path("shared-datasets-missing")) / "sst2" / "train.tsv"
TINY: dict[str, dict[str, Any]] = {
    "textcnn": {"embedding_dim": 16, "n_filters": 8},
    "gru": {"embedding_dim": 16, "hidden_size": 16},
    "bilstm": {"embedding_dim": 16, "hidden_size": 16, "pooling": "last"},
    "transformer_encoder": {"d_model": 16, "ff_dim": 32, "n_heads": 2, "max_length": 24},
}


@pytest.fixture(scope="module")
def phrases() -> list[dict[str, str]]:
    if not SST2.is_file():
        pytest.skip(f"the SST-2 data is missing: {SST2}")
    lines = SST2.read_text(encoding="utf-8").splitlines()[1:401]
    rows = [line.rsplit("\t", 1) for line in lines]
    return [
        {"text": text.strip(), "label": "positive" if label == "1" else "negative"}
        for text, label in rows
    ]


@pytest.fixture(scope="module")
def trained(
    phrases: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    """One trained model directory per recipe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a second thread only adds contention
    directories = {}
    for recipe, sizes in TINY.items():
        root = tmp_path_factory.mktemp(recipe)
        given = {"n_epochs": 1, "min_frequency": 1, "max_length": 32, **sizes}
        ctx = TrainingContext(
            job_id=recipe,
            task="text-classification",
            train=phrases[:300],
            validation=[],
            test=phrases[300:],
            hyperparameters=RECIPES[recipe].resolve(given, 300),
            seed=0,
            output_dir=root / "model",
            work_dir=root / "work",
        )
        RECIPES[recipe].train(ctx)
        directories[recipe] = ctx.output_dir
    yield directories
    torch.set_num_threads(threads)


def _source(directory: Path, name: str = "sentiment") -> ModelSource:
    return ModelSource.for_directory(
        directory, task="text-classification", runtime="openmaas-nn", name=name
    )


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_conformance(recipe: str, trained: dict[str, Path]) -> None:
    model = check_conformance(TextNetworkRuntime(), _source(trained[recipe]))
    assert isinstance(model, TextNetworkModel)
    assert model.labels == ("negative", "positive")
    ranking = model.classify(["a gorgeous , witty , seductive movie ."])[0]
    assert sum(r.score for r in ranking) == pytest.approx(1.0)
    expected_limit = 24 if recipe == "transformer_encoder" else LONGEST_INPUT_TOKENS
    assert model.max_input_tokens == expected_limit
    # Longer than the encoder's positions: cut, not a failure.
    assert len(model.classify(["word " * 100])[0]) == 2
    model.unload()


def test_tokens_are_counted_with_the_models_vocabulary(trained: dict[str, Path]) -> None:
    model = TextNetworkRuntime().load(_source(trained["textcnn"]), LoadOptions())
    # Lowercased, split at spaces and at each punctuation mark; unknown words count too.
    assert model.count_tokens(["Hello, World!", "", "zzqx"]) == [4, 1, 1]
    assert model.count_tokens([]) == []


def test_memory_estimate_is_close_to_the_loaded_size(trained: dict[str, Path]) -> None:
    runtime = TextNetworkRuntime()
    source = _source(trained["gru"])
    model = runtime.load(source, LoadOptions())
    estimate = runtime.estimate_memory_bytes(source)
    assert 0.5 < estimate / model.memory_bytes < 2


def test_the_registry_detects_the_format_and_get_runtime_finds_it(
    trained: dict[str, Path], registry: Registry
) -> None:
    version = registry.registration.register_plan(
        "sentiment", plan_directory(trained["textcnn"]), VersionSpec(), caller=SYSTEM
    )
    assert (version.task, version.runtime, version.format) == (
        "text-classification",
        "openmaas-nn",
        "safetensors",
    )
    source_version, directory = registry.files.open_stored("sentiment", caller=SYSTEM)
    model = get_runtime("openmaas-nn").load(
        ModelSource.from_version(source_version, directory), LoadOptions()
    )
    assert model.classify(["a masterpiece"])[0][0].label in ("negative", "positive")


def test_broken_directories_fail_to_load_with_the_reason(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    runtime = TextNetworkRuntime()
    copy = shutil.copytree(trained["textcnn"], tmp_path / "model")
    spec = json.loads((copy / "openmaas.json").read_text())

    (copy / "openmaas.json").write_text(json.dumps({**spec, "labels": ["only-one"]}))
    with pytest.raises(ModelLoadFailed, match="2 outputs for 1 labels"):
        runtime.load(_source(copy), LoadOptions())

    (copy / "openmaas.json").write_text(json.dumps({**spec, "architecture": "lstm-crf"}))
    with pytest.raises(ModelLoadFailed, match="unknown architecture 'lstm-crf'"):
        runtime.load(_source(copy), LoadOptions())

    config = {**spec["config"], "n_filters": 9}
    (copy / "openmaas.json").write_text(json.dumps({**spec, "config": config}))
    with pytest.raises(ModelLoadFailed, match=r"sentiment:1: cannot load the network"):
        runtime.load(_source(copy), LoadOptions())

    (copy / "openmaas.json").write_text(json.dumps(spec))
    (copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadFailed, match="model.safetensors"):
        runtime.load(_source(copy), LoadOptions())

    wrong_task = ModelSource.for_directory(copy, task="embedding", runtime="openmaas-nn")
    with pytest.raises(ModelLoadFailed, match="token-classification, not embedding"):
        runtime.load(wrong_task, LoadOptions())


def test_vocabulary_is_deterministic_and_pads_with_zero() -> None:
    texts = ["The film, the cast!", "the FILM was long", "cast away"] * 3
    first = build_vocabulary(texts, max_size=100, min_frequency=2)
    second = build_vocabulary(texts, max_size=100, min_frequency=2)
    assert first.to_str() == second.to_str()
    assert first.token_to_id("[PAD]") == PAD_ID
    assert first.token_to_id("[UNK]") == UNKNOWN_ID
    assert first.encode("The film, the cast!").tokens == ["the", "film", ",", "the", "cast", "!"]
    rows = token_ids(first, ["the film", "", "never seen words"], max_length=2)
    assert rows == [[first.token_to_id("the"), first.token_to_id("film")], [1], [1, 1]]
    ids, lengths = pad_batch([[5, 6], [7]], min_length=4)
    assert ids.tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]]
    assert lengths.tolist() == [2, 1]
    capped = build_vocabulary(texts, max_size=4, min_frequency=1)
    assert capped.get_vocab_size() == 4  # [PAD], [UNK] and the two most frequent words
