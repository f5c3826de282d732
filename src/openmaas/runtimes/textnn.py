"""The `openmaas-nn` runtime: networks trained by OpenMaaS from scratch, in the directory
format of `openmaas.nn.saved`: text classifiers (TextCNN, BiLSTM/GRU, a small Transformer
encoder) and the BiLSTM tagger for named entities (token classification: a tag per piece of
text, grouped into entity spans with character offsets as the transformers runtime does).

A directory holding `model.onnx` (the network exported by the `onnx` or `quantize`
optimization methods, `openmaas.nn.graph`) runs that graph on onnxruntime instead, behind the
same call, with the same tokenizer and labels.

Example::

    source = ModelSource.for_directory(path, task="text-classification", runtime="openmaas-nn")
    model = TextNetworkRuntime().load(source, LoadOptions())
    model.classify(["a gripping, beautifully shot film"])[0][0]  # LabelScore('positive', 0.93)

    source = ModelSource.for_directory(path, task="token-classification", runtime="openmaas-nn")
    TextNetworkRuntime().load(source, LoadOptions()).extract_entities(["Merkel visited Paris."])
    # [[Entity(text='Merkel', label='PER', start=0, end=6, score=0.97), Entity('Paris', ...)]]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError

from openmaas.errors import ModelLoadFailed
from openmaas.nn.graph import GRAPH_FILE, GraphNetwork, is_graph_directory, load_graph_classifier
from openmaas.nn.saved import TOKENIZER_FILE, WEIGHTS_FILE, load_classifier, min_length
from openmaas.nn.tagger import encode_texts, pad_pieces
from openmaas.nn.vocab import pad_batch, token_ids
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime, softmax
from openmaas.runtimes.entity_spans import TaggedToken, group_entities
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore, ranked
from openmaas.tasks.token_classification import Entity

# Texts per forward pass, taken in length order so each pass pads little.
TEXTS_PER_PASS = 64
# Resident memory over file size: the weights once, plus activations of one pass.
WEIGHTS_OVERHEAD_FACTOR = 1.3
# A word-level vocabulary held in Rust maps takes a few times its JSON size.
TOKENIZER_OVERHEAD_FACTOR = 3


class TextNetworkRuntime(Runtime):
    """Networks trained by the textcnn, bilstm, gru and transformer_encoder recipes, and
    taggers trained by bilstm_tagger."""

    name = "openmaas-nn"
    tasks = frozenset({Task.TEXT_CLASSIFICATION, Task.TOKEN_CLASSIFICATION})

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        graph = is_graph_directory(source.directory)
        try:
            weights = (source.directory / (GRAPH_FILE if graph else WEIGHTS_FILE)).stat().st_size
            tokenizer = (source.directory / TOKENIZER_FILE).stat().st_size
        except OSError:
            return super().estimate_memory_bytes(source)
        return int(weights * WEIGHTS_OVERHEAD_FACTOR) + tokenizer * TOKENIZER_OVERHEAD_FACTOR

    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        if Task(source.task) is Task.TOKEN_CLASSIFICATION:
            return TextTaggerModel(source, options)
        return TextNetworkModel(source, options)


class TextNetworkModel(LoadedModel):
    """A text classifier; `TextTaggerModel` shares its loading."""

    task = Task.TEXT_CLASSIFICATION

    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        self.source = source
        self.tasks = frozenset({self.task})
        if Task(source.task) is not self.task:
            raise ModelLoadFailed(
                f"{source.label}: the openmaas-nn runtime serves text-classification and "
                f"token-classification, not {source.task}"
            )
        if options.threads:
            torch.set_num_threads(options.threads)
        graph = is_graph_directory(source.directory)
        try:
            if graph:
                saved = load_graph_classifier(source.directory, threads=options.threads)
            else:
                saved = load_classifier(source.directory)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise ModelLoadFailed(f"{source.label}: cannot load the network: {exc}") from exc
        if saved.task != self.task.value:
            raise ModelLoadFailed(
                f"{source.label}: the directory holds a {saved.task} network, registered as "
                f"{self.task.value}"
            )
        # A graph runs on onnxruntime's CPU provider: its inputs stay on the CPU.
        self.device = torch.device("cpu" if graph else options.device)
        self.network = saved.network.to(self.device)
        self.tokenizer = saved.tokenizer
        self.labels = saved.labels
        self.max_input_tokens = saved.max_input_tokens
        self._longest = saved.max_input_tokens
        self._min_length = min_length(saved.network)
        tensors = itertools.chain(self.network.parameters(), self.network.buffers())
        weights = sum(t.numel() * t.element_size() for t in tensors)
        if isinstance(self.network, GraphNetwork):
            weights += self.network.graph_bytes
        tokenizer = (source.directory / TOKENIZER_FILE).stat().st_size
        self.memory_bytes = weights + tokenizer * TOKENIZER_OVERHEAD_FACTOR

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [max(1, len(encoding.ids)) for encoding in encodings]

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        if not texts:
            return []
        rows = token_ids(self.tokenizer, texts, max_length=self._longest)
        logits = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        for start in range(0, len(order), TEXTS_PER_PASS):
            indices = order[start : start + TEXTS_PER_PASS]
            ids, lengths = pad_batch([rows[i] for i in indices], min_length=self._min_length)
            with torch.inference_mode():
                output = self.network(ids.to(self.device), lengths.to(self.device))
            logits[indices] = output.float().cpu().numpy()
        return [ranked(self.labels, row.tolist()) for row in softmax(logits)]

    def unload(self) -> None:
        del self.network
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class TextTaggerModel(TextNetworkModel):
    """A tagger: a tag per piece of text (words and punctuation), grouped into entities."""

    task = Task.TOKEN_CLASSIFICATION

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        raise self.wrong_task(Task.TEXT_CLASSIFICATION)  # its network tags pieces, not texts

    def extract_entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        if not texts:
            return []
        rows = encode_texts(self.tokenizer, texts, max_length=self._longest)
        probabilities: list[npt.NDArray[np.float64]] = [np.zeros((0, 0))] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        for start in range(0, len(order), TEXTS_PER_PASS):
            indices = order[start : start + TEXTS_PER_PASS]
            ids, casing, lengths = pad_pieces([rows[i] for i in indices])
            with torch.inference_mode():
                output = self.network(ids.to(self.device), lengths, casing.to(self.device))
            batch = softmax(output.float().cpu().numpy())
            for row, i in enumerate(indices):
                probabilities[i] = batch[row, : len(rows[i])]
        results = []
        for text, pieces, scores in zip(texts, rows, probabilities, strict=True):
            best = scores.argmax(axis=-1)
            # Each piece is a word of its own: "U.S." is tagged B-LOC I-LOC I-LOC I-LOC.
            tokens = [
                TaggedToken(
                    piece, start, end, self.labels[best[piece]], float(scores[piece, best[piece]])
                )
                for piece, (start, end) in enumerate(pieces.offsets)
                if end > start
            ]
            results.append(group_entities(text, tokens))
        return results
