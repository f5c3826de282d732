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
from openmaas.nn.vocab import PAD_ID, UNKNOWN_ID, pad_batch, token_ids
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime, softmax
from openmaas.runtimes.entity_spans import TaggedToken, group_entities
from openmaas.runtimes.gradients import (
    integrated_gradients,
    no_tokens_at,
    span_tokens,
    tag_columns,
    tagged_probability,
    word_embeddings,
)
from openmaas.tasks.explanation import Target, TokenAttributions
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
        # Integrated gradients need the torch network; a graph has none (occlusion explains).
        self.explains_with_gradients = not graph
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

    def attribute_tokens(self, text: str, target: Target, steps: int) -> TokenAttributions:
        """Integrated gradients of the label's probability at the word embeddings, from an
        all-padding text of the same length."""
        encoding = self.tokenizer.encode_batch([text], add_special_tokens=False)[0]
        ids = encoding.ids[: self._longest] or [UNKNOWN_ID]
        offsets = tuple((int(s), int(e)) for s, e in encoding.offsets[: self._longest])
        index = self.labels.index(target.label)
        batch, lengths = pad_batch([ids], min_length=self._min_length)
        network = self.network

        def probability(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return torch.softmax(network(ids, lengths).float(), dim=-1)[:, index]

        batch = batch.to(self.device)
        scores, delta = integrated_gradients(
            probability,
            word_embeddings(network),
            batch,
            torch.full_like(batch, PAD_ID),
            (lengths.to(self.device),),
            steps=steps,
        )
        return TokenAttributions(offsets or ((0, 0),), tuple(scores[: max(1, len(offsets))]), delta)

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

    def attribute_tokens(self, text: str, target: Target, steps: int) -> TokenAttributions:
        """Integrated gradients of the entity type's probability over the span's pieces, at
        the word embeddings (the casing feature stays as in the text)."""
        assert target.span is not None  # a tagger's target has its characters
        pieces = encode_texts(self.tokenizer, [text], max_length=self._longest)[0]
        positions = span_tokens(pieces.offsets, target.span)
        if not positions:
            raise no_tokens_at(target.label, target.span)
        columns = tag_columns(self.labels, target.label)
        ids, casing, lengths = pad_pieces([pieces])
        network = self.network

        def probability(
            ids: torch.Tensor, lengths: torch.Tensor, casing: torch.Tensor
        ) -> torch.Tensor:
            return tagged_probability(network(ids, lengths, casing), positions, columns)

        ids = ids.to(self.device)
        scores, delta = integrated_gradients(
            probability,
            word_embeddings(network),
            ids,
            torch.full_like(ids, PAD_ID),
            (lengths, casing.to(self.device)),
            steps=steps,
        )
        return TokenAttributions(pieces.offsets, tuple(scores), delta)
