"""ONNX graphs on onnxruntime: sentence embeddings, sequence classification and token
classification (entities with character offsets, grouped as the transformers runtime does).

The graph is `model.onnx` (or the directory's only `.onnx` file); the tokenizer comes from
the same directory, `tokenizer.json` read by the `tokenizers` library (transformers'
`AutoTokenizer` only when there is none). A batch is tokenized once, sorted by length and run
in sub-batches, so short texts are not padded to the longest one; results come back in input
order.

Version params: `output` (the graph output to read), `pooling` (mean | cls | max, for a 3-D
output), `normalize` ("l2"), `max_input_tokens`. A tagger's graph outputs logits per token
(batch, tokens, labels) and needs `tokenizer.json`, for offsets and word boundaries.

Example::

    source = ModelSource.for_directory(path, task="embedding", runtime="onnx",
                                       params={"pooling": "mean", "normalize": "l2"})
    model = OnnxRuntime().load(source, LoadOptions(threads=4))
    model.embed(["hello", "world"]).shape  # -> (2, 384)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from openmaas.errors import ModelLoadFailed
from openmaas.runtimes.base import (
    LoadedModel,
    LoadOptions,
    ModelSource,
    Runtime,
    l2_normalize,
    softmax,
)
from openmaas.runtimes.entity_spans import TaggedToken, group_entities
from openmaas.tasks.embedding import FloatArray
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore, ranked
from openmaas.tasks.token_classification import Entity

log = logging.getLogger(__name__)

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IntType = type[np.signedinteger[Any]]
INPUT_DTYPES: Mapping[str, IntType] = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
POOLINGS = frozenset({"mean", "cls", "max"})
MAX_BATCH = 64  # texts per session run
# On CPU smaller runs win, as in the transformers runtime: the batch is sorted by length, so
# a run of 16 pads only to its own longest (on all-MiniLM-L6-v2 at 64 clients, 64 texts in
# arrival order padded to the longest ran at 70% of the rate of sorted runs of 16).
MAX_BATCH_CPU = 16
# Padded tokens per run: bounds activation memory when a batch holds long texts.
MAX_BATCH_TOKENS = 16_384
# transformers writes model_max_length = int(1e30) when a tokenizer sets no limit.
UNSET_MAX_LENGTH = 1_000_000
# Models whose position ids start after the padding index: two positions are not usable.
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2}

IntArray = npt.NDArray[np.int64]
Positions = npt.NDArray[np.intp]


class TextTokenizer(Protocol):
    pad_id: int

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """(input ids, token type ids) per text, with special tokens, truncated."""
        ...

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with special tokens, not truncated."""
        ...


class FastTokenizer:
    """`tokenizer.json` through the Rust `tokenizers` library (no transformers import)."""

    def __init__(self, path: Path, max_tokens: int | None) -> None:
        from tokenizers import Tokenizer

        self._truncating = Tokenizer.from_file(str(path))
        # A second copy counts without truncation: settings are per tokenizer object, and
        # `count` may run while another thread encodes.
        self._counting = Tokenizer.from_file(str(path))
        padding = self._truncating.padding
        pad_id = padding.get("pad_id") if padding else None
        if not isinstance(pad_id, int):
            found = (self._truncating.token_to_id(t) for t in ("[PAD]", "<pad>"))
            pad_id = next((i for i in found if i is not None), 0)
        self.pad_id = pad_id
        # tokenizer.json files often carry a fixed padding/truncation from export time
        # (MiniLM's pads everything to 128): padding is done per sub-batch here instead.
        for tokenizer in (self._truncating, self._counting):
            tokenizer.no_padding()
            tokenizer.no_truncation()
        if max_tokens is not None:
            self._truncating.enable_truncation(max_tokens)

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        encodings = self.encodings(texts)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def encodings(self, texts: Sequence[str]) -> list[Any]:
        """`tokenizers.Encoding`s, truncated: ids with offsets and word ids (taggers)."""
        return list(self._truncating.encode_batch(list(texts)))

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._counting.encode_batch(list(texts))]


class TransformersTokenizer:
    """Fallback for directories with only a vocabulary (vocab.txt, sentencepiece model)."""

    def __init__(self, directory: Path, max_tokens: int | None) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self._max_tokens = max_tokens
        self.pad_id = int(self._tokenizer.pad_token_id or 0)

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        out = self._tokenizer(
            list(texts),
            truncation=self._max_tokens is not None,
            max_length=self._max_tokens,
            return_token_type_ids=True,
        )
        ids: list[list[int]] = out["input_ids"]
        type_ids: list[list[int]] = out.get("token_type_ids") or [[0] * len(x) for x in ids]
        return ids, type_ids

    def count(self, texts: Sequence[str]) -> list[int]:
        # Longer-than-max inputs make transformers log a warning; counting them is the point.
        return [len(x) for x in self._tokenizer(list(texts), verbose=False)["input_ids"]]


class OnnxRuntime(Runtime):
    """Embedding, classification and tagging models exported to ONNX (optimum,
    sentence-transformers, `torch.onnx.export`)."""

    name = "onnx"
    tasks = frozenset({Task.EMBEDDING, Task.TEXT_CLASSIFICATION, Task.TOKEN_CLASSIFICATION})

    def load(self, source: ModelSource, options: LoadOptions) -> OnnxModel:
        return OnnxModel(source, options, memory_bytes=self.estimate_memory_bytes(source))


class OnnxModel(LoadedModel):
    """An embedding model (`tasks.embedding.Embedder`), a classifier
    (`tasks.text_classification.Classifier`) or a tagger
    (`tasks.token_classification.EntityExtractor`), whichever task its version records."""

    embedding_dimensions: int | None = None
    truncatable_dimensions = False
    labels: tuple[str, ...] = ()

    def __init__(self, source: ModelSource, options: LoadOptions, *, memory_bytes: int) -> None:
        self.source = source
        self.memory_bytes = memory_bytes
        task = Task(source.task)
        if task not in OnnxRuntime.tasks:
            raise ModelLoadFailed(
                f"{source.label}: the onnx runtime serves embedding, text-classification and "
                f"token-classification, not {task.value}"
            )
        self.tasks = frozenset({task})
        directory = source.directory
        params = source.params
        config = _read_json(directory / "config.json")
        self.max_input_tokens = _max_input_tokens(directory, params, config)
        self._tokenizer = _tokenizer(directory, self.max_input_tokens)
        if task is Task.TOKEN_CLASSIFICATION and not isinstance(self._tokenizer, FastTokenizer):
            raise ModelLoadFailed(
                f"{source.label}: a tagger needs tokenizer.json (entity offsets come from it)"
            )
        self._session: Any = _session(_graph_file(source), options)
        self._max_batch = MAX_BATCH if options.device.startswith("cuda") else MAX_BATCH_CPU
        self._inputs = _token_inputs(self._session, source)
        self._output = _output_name(self._session, source, task)
        self._pooling = str(params.get("pooling") or "mean")
        if self._pooling not in POOLINGS:
            raise ModelLoadFailed(
                f"{source.label}: pooling {self._pooling!r} is not one of {sorted(POOLINGS)}"
            )
        self._normalize = params.get("normalize") == "l2"
        self._sigmoid = False
        width = self._output_width()
        if task is Task.EMBEDDING:
            self.embedding_dimensions = width
        else:
            self.labels = _labels(config, params, width)
            # Multi-label heads score each label independently.
            self._sigmoid = config.get("problem_type") == "multi_label_classification"
            self._sigmoid &= task is Task.TEXT_CLASSIFICATION

    # -- tasks ----------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, n) for n in self._tokenizer.count(texts)]

    def embed(self, texts: Sequence[str]) -> FloatArray:
        if Task.EMBEDDING not in self.tasks:
            raise self.wrong_task(Task.EMBEDDING)
        assert self.embedding_dimensions is not None  # set with the embedding task
        vectors = np.zeros((len(texts), self.embedding_dimensions), dtype=np.float32)
        for rows, output, mask in self._run(texts):
            vectors[rows] = output if output.ndim == 2 else _pool(output, mask, self._pooling)
        return l2_normalize(vectors) if self._normalize else vectors

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        if Task.TEXT_CLASSIFICATION not in self.tasks:
            raise self.wrong_task(Task.TEXT_CLASSIFICATION)
        logits = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for rows, output, _ in self._run(texts):
            logits[rows] = output
        scores = 1.0 / (1.0 + np.exp(-logits)) if self._sigmoid else softmax(logits)
        return [ranked(self.labels, row.tolist()) for row in scores]

    def extract_entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        if Task.TOKEN_CLASSIFICATION not in self.tasks:
            raise self.wrong_task(Task.TOKEN_CLASSIFICATION)
        assert isinstance(self._tokenizer, FastTokenizer)  # checked at load for taggers
        encodings = self._tokenizer.encodings(texts)
        ids = [e.ids for e in encodings]
        probabilities: list[npt.NDArray[np.float64]] = [np.zeros((0, 0))] * len(texts)
        for rows, output, _ in self._run_ids(ids, [e.type_ids for e in encodings]):
            batch = softmax(output)
            for row, index in enumerate(rows.tolist()):
                probabilities[index] = batch[row, : len(ids[index])]
        results = []
        for text, encoding, scores in zip(texts, encodings, probabilities, strict=True):
            best = scores.argmax(axis=-1)
            # As the transformers runtime: special tokens (no word) and empty offsets tag nothing.
            tokens = [
                TaggedToken(word, start, end, self.labels[best[t]], float(scores[t, best[t]]))
                for t, (word, (start, end)) in enumerate(
                    zip(encoding.word_ids, encoding.offsets, strict=True)
                )
                if word is not None and end > start
            ]
            results.append(group_entities(text, tokens))
        return results

    def input_batches(self, texts: Sequence[str]) -> Iterator[dict[str, npt.NDArray[Any]]]:
        """The graph's feeds for `texts`, sub-batch by sub-batch, as a run makes them (what a
        static quantization calibrates on)."""
        ids, type_ids = self._tokenizer.encode(texts)
        for rows, width in self._sub_batches(ids):
            yield self._feeds(rows, ids, type_ids, width=width)[0]

    def unload(self) -> None:
        self._session = None

    # -- execution ------------------------------------------------------------------------

    def _run(self, texts: Sequence[str]) -> Iterator[tuple[Positions, FloatArray, IntArray]]:
        """(input positions, output, attention mask) per sub-batch of similar lengths."""
        if not texts:
            return
        ids, type_ids = self._tokenizer.encode(texts)
        yield from self._run_ids(ids, type_ids)

    def _run_ids(
        self, ids: list[list[int]], type_ids: list[list[int]]
    ) -> Iterator[tuple[Positions, FloatArray, IntArray]]:
        if not ids:
            return
        if self._session is None:
            raise ModelLoadFailed(f"{self.source.label} was unloaded")
        for rows, width in self._sub_batches(ids):
            feeds, mask = self._feeds(rows, ids, type_ids, width=width)
            (output,) = self._session.run([self._output], feeds)
            yield rows, np.asarray(output, dtype=np.float32), mask

    def _sub_batches(self, ids: list[list[int]]) -> Iterator[tuple[Positions, int]]:
        """(input positions, padded width) of each run, shortest texts first."""
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            longest = int(lengths[order[min(start + self._max_batch, len(order)) - 1]])
            size = min(self._max_batch, max(1, MAX_BATCH_TOKENS // max(longest, 1)))
            rows = order[start : start + size]
            start += len(rows)
            yield rows, int(lengths[rows[-1]])

    def _feeds(
        self,
        rows: Positions,
        ids: list[list[int]],
        type_ids: list[list[int]],
        width: int,
    ) -> tuple[dict[str, npt.NDArray[Any]], IntArray]:
        # An empty text may tokenize to nothing: keep one (masked) position so the graph runs.
        shape = (len(rows), max(width, 1))
        arrays = {
            "input_ids": np.full(shape, self._tokenizer.pad_id, dtype=np.int64),
            "attention_mask": np.zeros(shape, dtype=np.int64),
            "token_type_ids": np.zeros(shape, dtype=np.int64),
        }
        for r, i in enumerate(rows.tolist()):
            n = len(ids[i])
            arrays["input_ids"][r, :n] = ids[i]
            arrays["attention_mask"][r, :n] = 1
            arrays["token_type_ids"][r, :n] = type_ids[i]
        feeds = {name: arrays[name].astype(dtype, copy=False) for name, dtype in self._inputs}
        return feeds, arrays["attention_mask"]

    def _output_width(self) -> int:
        """The output's last dimension: from the graph when static, else from a probe run."""
        for output in self._session.get_outputs():
            if output.name == self._output and output.shape and isinstance(output.shape[-1], int):
                return int(output.shape[-1])
        (_, output, _) = next(self._run(["hello"]))
        return int(output.shape[-1])


# -- loading helpers ----------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"cannot read {path.name}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _graph_file(source: ModelSource) -> Path:
    directory = source.directory
    if (directory / "model.onnx").is_file():
        return directory / "model.onnx"
    graphs = sorted(directory.rglob("*.onnx"))
    if len(graphs) == 1:
        return graphs[0]
    found = ", ".join(str(g.relative_to(directory)) for g in graphs) or "none"
    raise ModelLoadFailed(
        f"{source.label}: expected model.onnx or a single .onnx file (found: {found})"
    )


def _tokenizer(directory: Path, max_tokens: int | None) -> TextTokenizer:
    if (directory / "tokenizer.json").is_file():
        return FastTokenizer(directory / "tokenizer.json", max_tokens)
    return TransformersTokenizer(directory, max_tokens)


def _max_input_tokens(
    directory: Path, params: Mapping[str, Any], config: Mapping[str, Any]
) -> int | None:
    """The longest input, most specific source first: the version's params, the
    sentence-transformers limit (often below the architecture's), the tokenizer's, the
    position embeddings."""
    candidates = [
        params.get("max_input_tokens"),
        _read_json(directory / "sentence_bert_config.json").get("max_seq_length"),
        _read_json(directory / "tokenizer_config.json").get("model_max_length"),
    ]
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int):
        candidates.append(positions - POSITION_OFFSET.get(str(config.get("model_type")), 0))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < UNSET_MAX_LENGTH:
            return value
    return None


def _session(path: Path, options: LoadOptions) -> Any:
    import onnxruntime as ort

    settings = ort.SessionOptions()
    settings.intra_op_num_threads = options.threads or os.cpu_count() or 1
    # One graph runs at a time per model (the batcher serializes batches): parallelism goes
    # inside operators, not across them.
    settings.inter_op_num_threads = 1
    # No spin-waiting between runs: a spinning pool holds its cores while the server's event
    # loop (HTTP, auth, batching) needs one, and a shared machine's other work too.
    settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
    settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list[Any] = ["CPUExecutionProvider"]
    if options.device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            _, _, index = options.device.partition(":")
            cuda = ("CUDAExecutionProvider", {"device_id": int(index or 0)})
            providers = [cuda, "CPUExecutionProvider"]
        else:
            log.warning("onnxruntime has no CUDA provider here: %s runs on CPU", path.name)
    try:
        return ort.InferenceSession(str(path), sess_options=settings, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelLoadFailed(f"onnxruntime cannot load {path.name}: {exc}") from exc


def _token_inputs(session: Any, source: ModelSource) -> list[tuple[str, IntType]]:
    """The graph's declared inputs with their integer types: only those are fed."""
    inputs: list[tuple[str, IntType]] = []
    for declared in session.get_inputs():
        if declared.name not in TOKEN_INPUTS:
            raise ModelLoadFailed(
                f"{source.label}: the graph needs input {declared.name!r}; the onnx runtime "
                f"feeds only {', '.join(TOKEN_INPUTS)}"
            )
        dtype = INPUT_DTYPES.get(declared.type)
        if dtype is None:
            raise ModelLoadFailed(
                f"{source.label}: input {declared.name!r} is {declared.type}, not an integer tensor"
            )
        inputs.append((declared.name, dtype))
    if "input_ids" not in {name for name, _ in inputs}:
        raise ModelLoadFailed(f"{source.label}: the graph has no input_ids input")
    return inputs


def _output_name(session: Any, source: ModelSource, task: Task) -> str:
    outputs = {o.name: o for o in session.get_outputs()}
    wanted = source.params.get("output")
    if wanted is not None:
        if wanted not in outputs:
            raise ModelLoadFailed(
                f"{source.label}: the graph has no output {wanted!r} (it has: {', '.join(outputs)})"
            )
        name = str(wanted)
    else:
        preferred = (
            ("last_hidden_state", "sentence_embedding", "token_embeddings")
            if task is Task.EMBEDDING
            else ("logits",)
        )
        name = next((n for n in preferred if n in outputs), next(iter(outputs)))
    rank = len(outputs[name].shape or ())  # 0 when the graph leaves it unknown
    allowed = {Task.EMBEDDING: (2, 3), Task.TOKEN_CLASSIFICATION: (3,)}.get(task, (2,))
    if rank and rank not in allowed:
        raise ModelLoadFailed(
            f"{source.label}: output {name!r} has rank {rank}; {task.value} needs "
            + " or ".join(f"{r}-D" for r in allowed)
        )
    return name


def _labels(config: Mapping[str, Any], params: Mapping[str, Any], width: int) -> tuple[str, ...]:
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and len(id2label) == width:
        return tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    given = params.get("labels")
    if isinstance(given, list) and len(given) == width:
        return tuple(str(label) for label in given)
    return tuple(f"LABEL_{i}" for i in range(width))


def _pool(hidden: FloatArray, mask: IntArray, pooling: str) -> FloatArray:
    """Token vectors (batch, seq, dim) to one per text; padding never contributes."""
    pooled: FloatArray
    weights = mask[..., None].astype(np.float32)
    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = np.where(weights > 0, hidden, -np.inf).max(axis=1)
        pooled = np.where(np.isfinite(pooled), pooled, 0.0)  # a text with no tokens at all
    else:
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
    return pooled.astype(np.float32, copy=False)
