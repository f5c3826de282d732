"""Linear classifier heads over another registered model's sentence embeddings.

A version holds `weights.safetensors` (`weight` of shape (labels, dim), `bias` of (labels,)),
`labels.json` and `openmaas.json`, which names the encoder plus the pooling and normalization
the head was trained on. The encoder is another registered model, by reference (`encoder`:
loading opens it through `LoadOptions.open_dependency` and loads it with its own runtime), or
the version's own `encoder/` Hugging Face directory (`bundled_encoder`: a fine-tune that
trained encoder and head together), loaded by the `transformers` runtime. A text's scores are
`softmax(embedding @ weight.T + bias)` (or per-label sigmoids, normalized, for one-vs-rest
heads).

Example::

    options = LoadOptions(open_dependency=lambda ref: source_of(registry, ref))
    model = LinearHeadRuntime().load(source_of(registry, "intent-clinc150"), options)
    model.classify(["what's the weather like tomorrow"])[0][0].label  # -> "weather"
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from openmaas.errors import ModelLoadFailed
from openmaas.runtimes.base import (
    NATIVE_SPEC,
    LoadedModel,
    LoadOptions,
    ModelSource,
    Runtime,
    get_runtime,
    l2_normalize,
    softmax,
)
from openmaas.tasks.embedding import Embedder
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore, ranked

PROBABILITIES = frozenset({"softmax", "ovr"})
BUNDLED_ENCODER = "encoder"  # the only subdirectory a version may name as its encoder


class LinearHeadRuntime(Runtime):
    """Classifier heads (converted scikit-learn or trained here) over an embedding model."""

    name = "linear-head"
    tasks = frozenset({Task.TEXT_CLASSIFICATION})

    def load(self, source: ModelSource, options: LoadOptions) -> LinearHeadModel:
        return LinearHeadModel(source, options)


class LinearHeadModel(LoadedModel):
    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        from safetensors.numpy import load_file

        self.source = source
        self.tasks = frozenset({Task.TEXT_CLASSIFICATION})
        if Task(source.task) is not Task.TEXT_CLASSIFICATION:
            raise ModelLoadFailed(
                f"{source.label}: the linear-head runtime serves text-classification only"
            )
        spec = _read_json(source, NATIVE_SPEC)
        try:
            tensors = load_file(str(source.directory / "weights.safetensors"))
            self._weight = tensors["weight"].astype(np.float64)
            self._bias = tensors["bias"].astype(np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadFailed(f"{source.label}: cannot read the head's weights: {exc}") from exc
        self.labels = tuple(str(label) for label in _read_json(source, "labels.json")["labels"])
        n_labels, dim = self._weight.shape
        if self._bias.shape != (n_labels,) or len(self.labels) != n_labels:
            raise ModelLoadFailed(
                f"{source.label}: weight {self._weight.shape}, bias {self._bias.shape} and "
                f"{len(self.labels)} labels do not agree"
            )
        self._probability = str(spec.get("probability") or "softmax")
        if self._probability not in PROBABILITIES:
            raise ModelLoadFailed(
                f"{source.label}: probability {self._probability!r} is not softmax or ovr"
            )
        self._normalize = spec.get("normalize") == "l2"
        self.encoder = _load_encoder(source, spec, options)
        self._embedder = cast(Embedder, self.encoder)  # checked by _load_encoder
        if self._embedder.embedding_dimensions != dim:
            self.encoder.unload()
            raise ModelLoadFailed(
                f"{source.label}: the head takes {dim}-dimensional inputs, but encoder "
                f"{self.encoder.source.label} embeds in {self._embedder.embedding_dimensions}"
            )
        self.max_input_tokens = self.encoder.max_input_tokens
        self.memory_bytes = int(self._weight.nbytes + self._bias.nbytes) + self.encoder.memory_bytes

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.encoder.count_tokens(texts)

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        if not texts:
            return []
        embeddings = self._embedder.embed(texts)
        if self._normalize:  # a no-op when the encoder normalizes already
            embeddings = l2_normalize(embeddings)
        logits = embeddings.astype(np.float64) @ self._weight.T + self._bias
        return [ranked(self.labels, row.tolist()) for row in self._probabilities(logits)]

    def unload(self) -> None:
        self.encoder.unload()

    def _probabilities(self, logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self._probability == "softmax":
            return softmax(logits)
        # One-vs-rest, as scikit-learn's predict_proba: each label's sigmoid, normalized.
        sigmoids = 1.0 / (1.0 + np.exp(-logits))
        result: npt.NDArray[np.float64] = sigmoids / sigmoids.sum(axis=1, keepdims=True)
        return result


def _read_json(source: ModelSource, name: str) -> dict[str, Any]:
    try:
        data = json.loads((source.directory / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"{source.label}: cannot read {name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadFailed(f"{source.label}: {name} is not an object")
    return data


def _load_encoder(source: ModelSource, spec: dict[str, Any], options: LoadOptions) -> LoadedModel:
    bundled = spec.get("bundled_encoder")
    if bundled is not None:
        if bundled != BUNDLED_ENCODER:
            raise ModelLoadFailed(
                f"{source.label}: bundled_encoder must be {BUNDLED_ENCODER!r}, got {bundled!r}"
            )
        dependency = ModelSource.for_directory(
            source.directory / BUNDLED_ENCODER,
            task=Task.EMBEDDING.value,
            runtime="transformers",
            name=f"{source.name}/{BUNDLED_ENCODER}",
            version=source.version,
        )
    else:
        reference = spec.get("encoder") or source.params.get("encoder")
        if not isinstance(reference, str) or not reference:
            raise ModelLoadFailed(f"{source.label}: {NATIVE_SPEC} names no encoder")
        dependency = options.open_dependency(reference)
    # The head was fitted on embeddings pooled and normalized one way: the encoder is asked
    # for exactly those, whatever its own version's params say.
    params = dict(dependency.params)
    params.update({key: spec[key] for key in ("pooling", "normalize") if key in spec})
    encoder = get_runtime(dependency.runtime).load(replace(dependency, params=params), options)
    if (
        Task.EMBEDDING not in encoder.tasks
        or getattr(encoder, "embedding_dimensions", None) is None
    ):
        encoder.unload()
        raise ModelLoadFailed(
            f"{source.label}: encoder {dependency.label} is a {dependency.task} model, not an "
            "embedding model"
        )
    return encoder
