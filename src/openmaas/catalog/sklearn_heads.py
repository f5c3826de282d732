"""Convert scikit-learn linear classifier heads from joblib pickles to safetensors.

A pickle is a program: loading one with `joblib.load` runs whatever callables it names.
Here the pickle is read by `RestrictedUnpickler`, which resolves only an explicit
allow-list of globals, and the estimator class itself resolves to an inert stand-in that
just keeps the pickled attributes: no scikit-learn code runs and scikit-learn need not be
installed. What comes out is plain arrays, written as `weights.safetensors` + `labels.json`
+ `openmaas.json`.

Example::

    head = read_logistic_regression(models / "LogisticRegression.joblib")
    labels = read_label_map(models / "label_map.joblib")
    write_linear_head(head.with_labels(labels), out_dir, encoder="all-minilm-l6-v2")
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler
from safetensors.numpy import save_file

from openmaas.errors import UnsafeArtifact, UnsupportedSource

FloatArray = npt.NDArray[np.float64]
_PICKLE_PROTO = 0x80
_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1"})


class _LogisticRegressionState:
    """Stands in for sklearn's LogisticRegression while unpickling: keeps its attributes."""

    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeArtifact("the pickled LogisticRegression state is not a dict")
        self.state = state


def _reconstruct() -> Any:
    # numpy 2 moved the module to numpy._core; importing numpy.core there warns.
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(importlib.import_module(module), "_reconstruct")  # noqa: B009
        except ImportError:
            continue
    raise UnsupportedSource("this numpy has no multiarray._reconstruct")  # pragma: no cover


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"); nothing else is needed.
    if not isinstance(text, str) or encoding.lower() not in _LATIN1:
        raise UnsafeArtifact(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


# Everything a pickled LogisticRegression (and its label map) may name, and what each name
# resolves to. Any other global refuses the file.
ALLOWED_GLOBALS: Mapping[tuple[str, str], Callable[[], Any]] = {
    ("sklearn.linear_model._logistic", "LogisticRegression"): _constant(_LogisticRegressionState),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _constant(NumpyArrayWrapper),
    ("numpy", "ndarray"): _constant(np.ndarray),
    ("numpy", "dtype"): _constant(np.dtype),
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("_codecs", "encode"): _constant(_latin1_encode),
}


def _resolve(module: str, name: str, filename: str) -> Any:
    factory = ALLOWED_GLOBALS.get((module, name))
    if factory is None:
        raise UnsafeArtifact(
            f"refused {filename}: it references the global {module}.{name}, which is not on "
            "the allow-list for scikit-learn linear heads; the file was not loaded",
            param="source",
        )
    return factory()


class _NestedUnpickler(pickle._Unpickler):
    """Reads the nested pickle joblib writes for object arrays, with the same allow-list.

    The pure-Python unpickler (as joblib uses) reads only the bytes it consumes, so the outer
    stream resumes at the right offset.
    """

    def __init__(self, handle: IO[bytes], filename: str) -> None:
        super().__init__(handle)
        self._filename = filename

    def find_class(self, module: str, name: str) -> Any:
        return _resolve(module, name, self._filename)


class RestrictedUnpickler(NumpyUnpickler):  # type: ignore[misc]  # joblib ships no types
    """joblib's unpickler limited to `ALLOWED_GLOBALS`; arrays are read without joblib code.

    Example::

        with path.open("rb") as handle:
            obj = RestrictedUnpickler(path, handle).load()  # UnsafeArtifact if not allowed
    """

    dispatch = NumpyUnpickler.dispatch.copy()

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        super().__init__(str(path), handle, ensure_native_byte_order=True)
        self._name = path.name
        self._size = os.fstat(handle.fileno()).st_size

    def find_class(self, module: str, name: str) -> Any:
        return _resolve(module, name, self._name)

    def _load_build(self) -> None:
        # The plain pickle BUILD, then our own array read in place of joblib's: older joblib
        # versions read object arrays with an unrestricted pickle.load.
        super(NumpyUnpickler, self).load_build()
        if isinstance(self.stack[-1], NumpyArrayWrapper):
            wrapper = self.stack.pop()
            self.stack.append(self._read_array(wrapper))

    dispatch[pickle.BUILD[0]] = _load_build

    def _read_array(self, wrapper: Any) -> npt.NDArray[Any]:
        dtype, order = getattr(wrapper, "dtype", None), getattr(wrapper, "order", None)
        shape = getattr(wrapper, "shape", None)
        if (
            getattr(wrapper, "subclass", None) is not np.ndarray
            or not isinstance(dtype, np.dtype)
            or order not in ("C", "F")
            or not isinstance(shape, tuple)
            or not all(isinstance(n, int) and n >= 0 for n in shape)
        ):
            raise UnsafeArtifact(f"refused {self._name}: malformed joblib array header")
        handle: IO[bytes] = self.file_handle
        if dtype.hasobject:
            array = _NestedUnpickler(handle, self._name).load()
            if not isinstance(array, np.ndarray) or array.shape != shape:
                raise UnsafeArtifact(f"refused {self._name}: malformed object array")
            return array
        if getattr(wrapper, "numpy_array_alignment_bytes", None) is not None:
            padding = handle.read(1)
            handle.read(padding[0] if padding else 0)
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes > self._size - handle.tell():
            raise UnsafeArtifact(f"refused {self._name}: an array is larger than the file")
        data = np.frombuffer(handle.read(nbytes), dtype=dtype, count=count)
        array = data.reshape(shape[::-1]).T if order == "F" else data.reshape(shape)
        return np.ascontiguousarray(array.astype(dtype.newbyteorder("=")))


def restricted_load(path: Path) -> Any:
    """Unpickle a joblib file through the allow-list (uncompressed joblib files only)."""
    with path.open("rb") as handle:
        head = handle.read(1)
        if not head or head[0] != _PICKLE_PROTO:
            raise UnsupportedSource(
                f"{path.name} is not an uncompressed joblib pickle (compressed files are not "
                "supported by the converter)",
                param="source",
            )
        handle.seek(0)
        try:
            return RestrictedUnpickler(path, handle).load()
        except (UnsafeArtifact, UnsupportedSource):
            raise
        except Exception as exc:  # truncated or malformed streams raise many types
            raise UnsafeArtifact(
                f"refused {path.name}: unreadable pickle ({exc.__class__.__name__}: {exc})"[:500],
                param="source",
            ) from exc


# -- the head ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinearHead:
    """A linear classifier: scores = x @ weight.T + bias, one row per class.

    `probability` is "softmax" (multinomial) or "ovr" (per-class sigmoids, normalised).
    """

    weight: FloatArray  # (n_classes, n_features)
    bias: FloatArray  # (n_classes,)
    classes: tuple[str, ...]  # the estimator's class values, in row order
    labels: tuple[str, ...]  # human-readable names, in row order
    probability: str
    estimator: str
    sklearn_version: str | None

    def with_labels(self, id_to_name: Mapping[str, str]) -> LinearHead:
        return replace(self, labels=tuple(id_to_name.get(c, c) for c in self.classes))

    def predict(self, x: FloatArray) -> list[str]:
        """Labels for a batch of embeddings (what a runtime does; used to check conversions)."""
        scores = x @ self.weight.T + self.bias
        return [self.labels[i] for i in np.argmax(scores, axis=1)]


def read_logistic_regression(path: Path) -> LinearHead:
    """The head of a pickled `sklearn.linear_model.LogisticRegression`, read safely."""
    obj = restricted_load(path)
    if not isinstance(obj, _LogisticRegressionState):
        raise UnsupportedSource(f"{path.name} does not hold a LogisticRegression", param="source")
    state = obj.state
    coef, intercept, classes = (state.get(k) for k in ("coef_", "intercept_", "classes_"))
    if not all(isinstance(a, np.ndarray) for a in (coef, intercept, classes)):
        raise UnsupportedSource(f"{path.name}: the estimator is not fitted", param="source")
    assert isinstance(coef, np.ndarray)
    assert isinstance(intercept, np.ndarray)
    assert isinstance(classes, np.ndarray)
    weight = coef.astype(np.float64)
    bias = np.broadcast_to(intercept.astype(np.float64), (weight.shape[0],)).copy()
    names = tuple(str(c) for c in classes.tolist())
    if weight.ndim != 2 or len(names) < 2:
        raise UnsupportedSource(f"{path.name}: unexpected coef_ shape {coef.shape}")
    if weight.shape[0] == 1 and len(names) == 2:
        # Binary: sklearn scores class 1 with d = x.w + b. Rows (-d/2, d/2) give the same
        # argmax, and their softmax is exactly sigmoid(d), sklearn's predict_proba.
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0], bias[0]]) / 2
    if weight.shape[0] != len(names):
        raise UnsupportedSource(
            f"{path.name}: {weight.shape[0]} coefficient rows for {len(names)} classes"
        )
    return LinearHead(
        weight=np.ascontiguousarray(weight),
        bias=bias,
        classes=names,
        labels=names,
        probability=_probability_mode(state, len(names)),
        estimator="sklearn.linear_model.LogisticRegression",
        sklearn_version=str(state.get("_sklearn_version") or "") or None,
    )


def _probability_mode(state: Mapping[str, Any], n_classes: int) -> str:
    multi_class = state.get("multi_class")
    if n_classes == 2 or multi_class == "multinomial":
        return "softmax"
    if multi_class == "ovr" or state.get("solver") == "liblinear":
        return "ovr"
    return "softmax"  # "auto"/"deprecated" with a multinomial-capable solver


def read_label_map(path: Path) -> dict[str, str]:
    """A pickled {id: name} map as {class id: human-readable name}.

    Some maps hold a few entries the other way round ({name: id}); numeric strings are ids.
    """
    raw = restricted_load(path)
    if not isinstance(raw, dict):
        raise UnsupportedSource(f"{path.name} does not hold a dict", param="source")
    labels: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str | int) or not isinstance(value, str | int):
            raise UnsupportedSource(f"{path.name}: labels must be strings or integers")
        k, v = str(key), str(value)
        if _is_id(v) and not _is_id(k):
            k, v = v, k
        labels[k] = v
    return labels


def _is_id(text: str) -> bool:
    return text.lstrip("-").isdigit()


def write_linear_head(
    head: LinearHead,
    directory: Path,
    *,
    task: str,
    encoder: str,
    pooling: str,
    normalize: str | None,
    source: Mapping[str, Any],
) -> Path:
    """Write weights.safetensors, labels.json and openmaas.json into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({"weight": head.weight, "bias": head.bias}, str(directory / "weights.safetensors"))
    labels = {"labels": list(head.labels), "classes": list(head.classes)}
    (directory / "labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    spec = {
        "task": task,
        "runtime": "linear-head",
        "format": "safetensors",
        "encoder": encoder,
        "pooling": pooling,
        "normalize": normalize,
        "probability": head.probability,
        "num_labels": len(head.labels),
        "input_dim": int(head.weight.shape[1]),
        "converted_from": {
            **source,
            "estimator": head.estimator,
            "sklearn_version": head.sklearn_version,
        },
    }
    (directory / "openmaas.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return directory
