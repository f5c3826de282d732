"""Encoder tasks of the transformers runtime: embeddings, text classification, cross-encoder
reranking and token classification (entities with character offsets).

Every pass tokenizes the whole batch once and runs it in length-sorted sub-batches (see
`TransformersModel.sub_batches`); results go back to input order.

Example::

    # source.task == "token-classification"
    model = TransformersRuntime().load(source, LoadOptions())
    model.extract_entities(["Angela Merkel visited Paris."])
    # [[Entity(text='Angela Merkel', label='PER', start=0, end=13, score=0.98), ...]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BatchEncoding,
    PretrainedConfig,
)

from openmaas.errors import InvalidRequest, UnsupportedSource, WrongTask
from openmaas.runtimes.base import LoadOptions, ModelSource, l2_normalize, softmax

# Entity grouping is shared with the openmaas-nn tagger; `parse_tag` stays importable here.
from openmaas.runtimes.entity_spans import TaggedToken, group_entities
from openmaas.runtimes.entity_spans import parse_tag as parse_tag
from openmaas.runtimes.transformers import Checkpoint, TransformersModel, load_checkpoint
from openmaas.tasks.embedding import FloatArray
from openmaas.tasks.explanation import Target, TokenAttributions
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore, ranked
from openmaas.tasks.token_classification import Entity

# -- embeddings -------------------------------------------------------------------------------

POOLING_MODES = ("mean", "cls", "max", "last")
# sentence-transformers' names for the modes we run (its `pooling_mode`, and the older flags).
SENTENCE_TRANSFORMERS_MODES = {"mean": "mean", "cls": "cls", "max": "max", "lasttoken": "last"}
SENTENCE_TRANSFORMERS_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True, slots=True)
class Pooling:
    """How token vectors become one text vector: from a sentence-transformers directory's
    modules when it has them, else the version's params (`pooling`, `normalize`), else mean."""

    mode: str = "mean"
    normalize: bool = False
    checkpoint_path: str = ""  # where a sentence-transformers directory keeps the network

    @classmethod
    def for_source(cls, source: ModelSource) -> Pooling:
        if (source.directory / "modules.json").is_file():
            return cls._from_sentence_transformers(source)
        mode = str(source.params.get("pooling") or "mean")
        normalize = source.params.get("normalize")
        if mode not in POOLING_MODES or normalize not in (None, "l2"):
            raise InvalidRequest(
                f"model '{source.label}': pooling must be one of {', '.join(POOLING_MODES)} and "
                f"normalize 'l2' or null; got pooling={mode!r}, normalize={normalize!r}",
                param="params",
            )
        return cls(mode=mode, normalize=normalize == "l2")

    @classmethod
    def _from_sentence_transformers(cls, source: ModelSource) -> Pooling:
        modules = json.loads((source.directory / "modules.json").read_text(encoding="utf-8"))
        pooling = cls()
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            path = str(module.get("path", ""))
            if kind == "Transformer":
                pooling = cls(pooling.mode, pooling.normalize, path)
            elif kind == "Pooling":
                config = json.loads((source.directory / path / "config.json").read_text("utf-8"))
                mode = _sentence_transformers_mode(source, config)
                pooling = cls(mode, pooling.normalize, pooling.checkpoint_path)
            elif kind == "Normalize":
                pooling = cls(pooling.mode, True, pooling.checkpoint_path)
            else:
                # A Dense or other module changes the vectors: serving without it would be
                # silently wrong.
                raise UnsupportedSource(
                    f"model '{source.label}' uses the sentence-transformers module "
                    f"{module.get('type')}, which the transformers runtime does not run",
                    param="source",
                )
        return pooling


def _sentence_transformers_mode(source: ModelSource, config: dict[str, Any]) -> str:
    declared = config.get("pooling_mode")
    if declared is None:
        modes = [mode for flag, mode in SENTENCE_TRANSFORMERS_FLAGS.items() if config.get(flag)]
    else:
        modes = [declared] if isinstance(declared, str) else list(declared)
    modes = modes or ["mean"]
    if len(modes) != 1 or modes[0] not in SENTENCE_TRANSFORMERS_MODES:
        raise UnsupportedSource(
            f"model '{source.label}' pools with {'+'.join(modes)}; the transformers runtime "
            f"runs one of {', '.join(SENTENCE_TRANSFORMERS_MODES)}",
            param="source",
        )
    return SENTENCE_TRANSFORMERS_MODES[modes[0]]


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(batch, tokens, dim) -> (batch, dim), ignoring padded positions (right padding)."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class EmbeddingModel(TransformersModel):
    """A bare encoder (`AutoModel`) pooled into one vector per text."""

    auto_class = AutoModel
    remember_counted = True
    truncatable_dimensions = False

    def __init__(
        self,
        source: ModelSource,
        tasks: frozenset[Task],
        checkpoint: Checkpoint,
        pooling: Pooling | None = None,
    ):
        super().__init__(source, tasks, checkpoint)
        self.pooling = pooling or Pooling.for_source(source)
        self.dimensions = int(self.network.config.hidden_size)
        self.embedding_dimensions = self.dimensions

    @classmethod
    def load(cls, source: ModelSource, options: LoadOptions) -> Self:
        # The pooling comes first: it says where a sentence-transformers directory keeps
        # the network.
        pooling = Pooling.for_source(source)
        checkpoint = load_checkpoint(
            source, options, cls.auto_class, subdirectory=pooling.checkpoint_path
        )
        return cls(source, frozenset({Task.EMBEDDING}), checkpoint, pooling)

    @classmethod
    def checkpoint_directory(cls, source: ModelSource) -> Path:
        path = Pooling.for_source(source).checkpoint_path
        return source.directory / path if path else source.directory

    def embed(self, texts: Sequence[str]) -> FloatArray:
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return vectors
        encoded = self.model_inputs(texts)
        for batch in self.sub_batches(encoded):
            with torch.inference_mode():
                hidden = self.network(**batch.inputs).last_hidden_state
                pooled = pool(hidden, batch.inputs["attention_mask"], self.pooling.mode)
            vectors[batch.indices] = pooled.float().cpu().numpy()
        return l2_normalize(vectors) if self.pooling.normalize else vectors


# -- sequence classification ------------------------------------------------------------------


class _SequenceScorer(TransformersModel):
    """`AutoModelForSequenceClassification` logits for texts or text pairs, in input order."""

    auto_class = AutoModelForSequenceClassification

    def _logits(self, encoded: BatchEncoding) -> npt.NDArray[np.float32]:
        rows = len(encoded["input_ids"])
        logits = np.zeros((rows, self.network.config.num_labels or 1), dtype=np.float32)
        for batch in self.sub_batches(encoded):
            with torch.inference_mode():
                output = self.network(**batch.inputs).logits
            logits[batch.indices] = output.float().cpu().numpy()
        return logits


class TextClassifier(_SequenceScorer):
    """Every label with its probability: softmax, or one sigmoid per label for multi-label
    models (`problem_type == "multi_label_classification"`)."""

    def __init__(self, source: ModelSource, tasks: frozenset[Task], checkpoint: Checkpoint):
        super().__init__(source, tasks, checkpoint)
        config = self.network.config
        if config.num_labels == 1:
            raise WrongTask(
                f"model '{source.label}' has a single output: it is a cross-encoder and serves "
                "rerank, not text-classification",
                param="model",
            )
        self.labels = _labels(config)
        self.multi_label = config.problem_type == "multi_label_classification"
        # Word offsets come from a fast tokenizer; without one, occlusion explains.
        self.explains_with_gradients = bool(self.tokenizer.is_fast)

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        if not texts:
            return []
        logits = self._logits(self.tokenize(texts))
        scores = _sigmoid(logits) if self.multi_label else softmax(logits)
        return [ranked(self.labels, row.tolist()) for row in scores]

    def attribute_tokens(self, text: str, target: Target, steps: int) -> TokenAttributions:
        from openmaas.runtimes import transformers_gradients as gradients

        index = self.labels.index(target.label)
        objective = gradients.classifier_objective(index, multi_label=self.multi_label)
        return gradients.attribute(self, text, objective, steps)


class CrossEncoder(_SequenceScorer):
    """A one-output sequence classifier over (query, document) pairs; relevance is the
    sigmoid of that output, as sentence-transformers' CrossEncoder reports it."""

    def __init__(self, source: ModelSource, tasks: frozenset[Task], checkpoint: Checkpoint):
        super().__init__(source, tasks, checkpoint)
        labels = self.network.config.num_labels
        if labels != 1:
            raise WrongTask(
                f"model '{source.label}' has {labels} labels: it is a text classifier, not a "
                "cross-encoder (one relevance output), so it cannot serve rerank",
                param="model",
            )

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        queries = [query for query, _ in pairs]
        documents = [document for _, document in pairs]
        logits = self._logits(self.tokenize(queries, documents))
        return [float(s) for s in _sigmoid(logits[:, 0])]


def _labels(config: PretrainedConfig) -> tuple[str, ...]:
    """Label names in id order (`id2label` keys are ints once loaded, strings in raw JSON)."""
    names: dict[Any, str] = dict(config.id2label or {})
    count = config.num_labels or len(names)
    return tuple(str(names.get(i, names.get(str(i), f"LABEL_{i}"))) for i in range(count))


def _sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return result


# -- token classification ---------------------------------------------------------------------


class EntityTagger(TransformersModel):
    """`AutoModelForTokenClassification` with entity spans aggregated from subwords. Needs a
    fast tokenizer, for character offsets and word boundaries."""

    auto_class = AutoModelForTokenClassification

    def __init__(self, source: ModelSource, tasks: frozenset[Task], checkpoint: Checkpoint):
        super().__init__(source, tasks, checkpoint)
        if not self.tokenizer.is_fast:
            raise UnsupportedSource(
                f"model '{source.label}' has no fast (tokenizer.json) tokenizer: entity "
                "offsets need one",
                param="source",
            )
        self.labels = _labels(self.network.config)
        self.explains_with_gradients = True

    def attribute_tokens(self, text: str, target: Target, steps: int) -> TokenAttributions:
        from openmaas.runtimes import transformers_gradients as gradients
        from openmaas.runtimes.gradients import tag_columns

        objective = gradients.tagger_objective(target, tag_columns(self.labels, target.label))
        return gradients.attribute(self, text, objective, steps)

    def extract_entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        if not texts:
            return []
        encoded = self.tokenize(texts, return_offsets_mapping=True)
        probabilities: list[npt.NDArray[np.float32]] = [np.zeros((0, 0), np.float32)] * len(texts)
        for batch in self.sub_batches(encoded):
            with torch.inference_mode():
                logits = self.network(**batch.inputs).logits
            rows = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            for row, (index, length) in enumerate(zip(batch.indices, batch.lengths, strict=True)):
                probabilities[index] = rows[row, :length]
        results = []
        for index, text in enumerate(texts):
            best = probabilities[index].argmax(axis=-1)
            tokens = [
                TaggedToken(
                    word, start, end, self.labels[best[t]], float(probabilities[index][t, best[t]])
                )
                for t, (word, (start, end)) in enumerate(
                    zip(encoded.word_ids(index), encoded["offset_mapping"][index], strict=True)
                )
                if word is not None and end > start
            ]
            results.append(group_entities(text, tokens))
        return results
