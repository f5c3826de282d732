"""Converting scikit-learn heads from joblib pickles: faithful, and never running the pickle.

Plain `joblib.load` appears only in these tests, as the trusted reference the conversion is
compared with; the converter itself reads pickles through an allow-list.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from safetensors.numpy import load_file

from openmaas.catalog.sklearn_heads import (
    LinearHead,
    read_label_map,
    read_logistic_regression,
    restricted_load,
    write_linear_head,
)
from openmaas.errors import UnsafeArtifact, UnsupportedSource

joblib = pytest.importorskip("joblib")
sklearn_linear = pytest.importorskip("sklearn.linear_model")
sklearn_exceptions = pytest.importorskip("sklearn.exceptions")


def _intent_models_dir() -> Path | None:
    try:
        dist = importlib.metadata.distribution("rag-intent-classifier")
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file("rag_intent_classifier/models")))


INTENT_DIR = _intent_models_dir()
needs_intent = pytest.mark.skipif(
    INTENT_DIR is None, reason="rag-intent-classifier is not installed"
)

TRIPWIRE: list[str] = []


def _tripwire(*args: object) -> None:
    """What the crafted pickles call if anything ever runs them (it must not)."""
    TRIPWIRE.append("called")


class _CallsOsSystem:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("exit 0",))


class _CallsTripwire:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_tripwire, ("boom",))


def _trusted_load(path: Path) -> Any:
    # The packaged files were written by an older scikit-learn; the reference load warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn_exceptions.InconsistentVersionWarning)
        return joblib.load(path)


def _softmax(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    result: npt.NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def _inputs(head: LinearHead, seed: int = 0) -> npt.NDArray[np.float64]:
    """Random unit vectors, plus vectors near each class's weights so every class shows up."""
    rng = np.random.default_rng(seed)
    uniform = rng.standard_normal((300, head.weight.shape[1]))
    near = head.weight + 0.05 * rng.standard_normal(head.weight.shape)
    x = np.vstack([uniform, near])
    result: npt.NDArray[np.float64] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return result


def _check_faithful(head: LinearHead, clf: Any, x: npt.NDArray[np.float64]) -> None:
    scores = x @ head.weight.T + head.bias
    mine = np.array(head.classes)[np.argmax(scores, axis=1)]
    theirs = np.array([str(c) for c in clf.predict(x)])
    np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(_softmax(scores), clf.predict_proba(x), rtol=1e-9, atol=1e-12)


# -- the packaged intent head ---------------------------------------------------------------


@needs_intent
def test_packaged_intent_head_converts_faithfully(tmp_path: Path) -> None:
    assert INTENT_DIR is not None
    head = read_logistic_regression(INTENT_DIR / "LogisticRegression.joblib")
    head = head.with_labels(read_label_map(INTENT_DIR / "label_map.joblib"))
    clf = _trusted_load(INTENT_DIR / "LogisticRegression.joblib")
    assert head.weight.shape == (157, 384)
    assert head.probability == "softmax"
    x = _inputs(head)
    _check_faithful(head, clf, x)
    assert len(set(head.predict(x))) > 100  # the inputs really exercise most classes

    # ... and what lands on disk is the same head.
    write_linear_head(
        head,
        tmp_path / "out",
        task="text-classification",
        encoder="all-minilm-l6-v2",
        pooling="mean",
        normalize="l2",
        source={"distribution": "rag-intent-classifier"},
    )
    tensors = load_file(str(tmp_path / "out" / "weights.safetensors"))
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    scores = x @ tensors["weight"].T + tensors["bias"]
    on_disk = [labels["labels"][i] for i in np.argmax(scores, axis=1)]
    names = _trusted_load(INTENT_DIR / "label_map.joblib")
    expected = [_reference_label(str(p), names) for p in clf.predict(x)]
    assert on_disk == expected
    spec = json.loads((tmp_path / "out" / "openmaas.json").read_text())
    assert spec["runtime"] == "linear-head"
    assert spec["encoder"] == "all-minilm-l6-v2"
    assert spec["num_labels"] == 157


def _reference_label(prediction: str, label_map: dict[str, str]) -> str:
    """The package's own rule (infer._resolve_label_name) for turning a class into a name."""
    if prediction in label_map and not label_map[prediction].isdigit():
        return label_map[prediction]
    for key, value in label_map.items():
        if str(value) == prediction:
            return str(key)
    return prediction


@needs_intent
def test_label_map_becomes_id_to_name() -> None:
    assert INTENT_DIR is not None
    labels = read_label_map(INTENT_DIR / "label_map.joblib")
    head = read_logistic_regression(INTENT_DIR / "LogisticRegression.joblib")
    assert len(labels) == 157
    assert all(k.isdigit() and not v.isdigit() for k, v in labels.items())
    # Entries stored the other way round in the package ({name: id}) are turned around.
    assert labels["201"] == "connect_to_human"
    assert labels["61"] == "translate"
    # Every class of the estimator (ids, and a few classes that are already names) gets a
    # distinct readable label.
    named = head.with_labels(labels).labels
    assert len(set(named)) == 157
    assert not any(label.isdigit() for label in named)


# -- heads trained here ---------------------------------------------------------------------


def _separable(n_classes: int, seed: int = 0) -> tuple[npt.NDArray[np.float64], list[str]]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, 8)) * 4
    y = rng.integers(0, n_classes, 200)
    x = centers[y] + rng.standard_normal((200, 8))
    return x, [f"class-{i}" for i in y]


@pytest.mark.parametrize("n_classes", [2, 4])
def test_freshly_trained_heads_convert_faithfully(tmp_path: Path, n_classes: int) -> None:
    x, y = _separable(n_classes)
    clf = sklearn_linear.LogisticRegression(max_iter=2000).fit(x, y)
    path = tmp_path / "head.joblib"
    joblib.dump(clf, path)
    head = read_logistic_regression(path)
    assert head.weight.shape == (n_classes, 8)
    assert head.classes == tuple(str(c) for c in clf.classes_)
    probe = np.random.default_rng(1).standard_normal((500, 8)) * 4
    _check_faithful(head, clf, probe)


# -- refusals -------------------------------------------------------------------------------


def test_refuses_a_pickle_that_calls_os_system(tmp_path: Path) -> None:
    path = tmp_path / "evil.joblib"
    path.write_bytes(pickle.dumps({"coef_": _CallsOsSystem()}, protocol=4))
    with pytest.raises(UnsafeArtifact, match=r"system.*not on the allow-list"):
        restricted_load(path)
    with pytest.raises(UnsafeArtifact, match="system"):
        read_label_map(path)


def test_refuses_a_disallowed_global_hidden_in_an_object_array(tmp_path: Path) -> None:
    # joblib writes object arrays as a nested pickle stream; it gets the same allow-list.
    path = tmp_path / "nested.joblib"
    joblib.dump({"classes_": np.array([_CallsTripwire()], dtype=object)}, path)
    with pytest.raises(UnsafeArtifact, match=r"test_sklearn_heads\._tripwire"):
        restricted_load(path)
    assert TRIPWIRE == []


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(eval, protocol=2),
        pickle.dumps(getattr, protocol=4),
        pickle.dumps(_CallsTripwire(), protocol=4),
    ],
)
def test_refuses_any_global_off_the_list(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "x.joblib"
    path.write_bytes(payload)
    with pytest.raises(UnsafeArtifact, match="refused x.joblib"):
        restricted_load(path)
    assert TRIPWIRE == []


def test_refuses_truncated_and_compressed_files(tmp_path: Path) -> None:
    x, y = _separable(3)
    clf = sklearn_linear.LogisticRegression(max_iter=2000).fit(x, y)
    whole = tmp_path / "whole.joblib"
    joblib.dump(clf, whole)
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes(whole.read_bytes()[:-200])
    with pytest.raises(UnsafeArtifact):
        read_logistic_regression(truncated)
    compressed = tmp_path / "compressed.joblib"
    joblib.dump(clf, compressed, compress=3)
    with pytest.raises(UnsupportedSource, match="not an uncompressed joblib pickle"):
        read_logistic_regression(compressed)


def test_refuses_files_that_hold_something_else(tmp_path: Path) -> None:
    path = tmp_path / "labels.joblib"
    joblib.dump({"0": "a", "1": "b"}, path)
    with pytest.raises(UnsupportedSource, match="does not hold a LogisticRegression"):
        read_logistic_regression(path)
    assert read_label_map(path) == {"0": "a", "1": "b"}
