"""The keras runtime: tiny Keras 3 text classifiers saved by the test pass the conformance suite
and score as Keras itself does, on Keras's PyTorch backend, with TensorFlow never imported."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from openmaas.errors import ModelLoadFailed
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.keras import KerasRuntime, class_scores, import_keras
from tests.runtimes.conformance import check_conformance
from tests.runtimes.keras_models import (
    TEXTS,
    BuiltModel,
    text_vectorization_lstm,
    tokenizer_gru,
    vocabulary_conv1d,
)

# Keras's model.predict on torch: numpy's DeprecationWarning about __array__(copy=...).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltModel]:
    root = tmp_path_factory.mktemp("keras")
    return {
        "lstm": text_vectorization_lstm(root / "lstm"),
        "conv": vocabulary_conv1d(root / "conv"),
        "gru": tokenizer_gru(root / "gru"),
    }


@pytest.mark.parametrize("name", ["lstm", "conv", "gru"])
def test_conformance_and_keras_own_scores(name: str, built: dict[str, BuiltModel]) -> None:
    params = {"labels": ["negative", "positive"]} if name == "conv" else {}
    source = ModelSource.for_directory(
        built[name].directory, task="text-classification", runtime="keras", params=params
    )
    model = check_conformance(KerasRuntime(), source, LoadOptions(threads=1))
    assert model.labels == ("negative", "positive")
    scores = [{s.label: s.score for s in ranking} for ranking in model.classify(TEXTS)]
    served = np.array([[row["negative"], row["positive"]] for row in scores])
    np.testing.assert_allclose(served, built[name].expected, atol=1e-5)
    model.unload()


def test_keras_runs_on_torch_without_tensorflow(built: dict[str, BuiltModel]) -> None:
    assert import_keras().backend.backend() == "torch"
    assert "tensorflow" not in sys.modules


def test_scores_from_each_kind_of_output_layer() -> None:
    np.testing.assert_allclose(class_scores(np.array([[0.8]]), "sigmoid"), [[0.2, 0.8]])
    np.testing.assert_allclose(class_scores(np.array([[0.0]]), "linear"), [[0.5, 0.5]])
    np.testing.assert_allclose(class_scores(np.array([[0.9, 0.7]]), "sigmoid"), [[0.9, 0.7]])
    logits = class_scores(np.array([[0.0, np.log(3.0)]]), "linear")
    np.testing.assert_allclose(logits, [[0.25, 0.75]])
    with pytest.raises(ModelLoadFailed, match="shape"):
        class_scores(np.zeros((2, 3, 4)), "softmax")


def test_a_corrupt_weights_file_fails_to_load_with_its_cause(
    built: dict[str, BuiltModel], tmp_path: Path
) -> None:
    source_dir = built["conv"].directory
    with zipfile.ZipFile(source_dir / "reviews.keras") as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["model.weights.h5"] = b"not hdf5"
    with zipfile.ZipFile(tmp_path / "reviews.keras", "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    (tmp_path / "vocabulary.txt").write_bytes((source_dir / "vocabulary.txt").read_bytes())
    source = ModelSource.for_directory(tmp_path, task="text-classification", runtime="keras")
    with pytest.raises(ModelLoadFailed, match="Keras could not load"):
        KerasRuntime().load(source, LoadOptions())
