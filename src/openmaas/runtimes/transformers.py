"""The transformers runtime: Hugging Face PyTorch checkpoints, loaded with `from_pretrained`.

This module holds what every task shares: loading a checkpoint onto its device, the facts a
loaded model declares (memory, input limit), token counting, and length-sorted sub-batching.
The tasks live beside it: `transformers_encoders` (embedding, classification, rerank, entities)
and `transformers_generation` (causal and sequence-to-sequence generation).

Example::

    runtime = TransformersRuntime()
    source = ModelSource.for_directory(path, task="embedding", runtime="transformers")
    model = runtime.load(source, LoadOptions(threads=4))
    vectors = model.embed(["hello", "world"])
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer
from transformers import AutoTokenizer, BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from openmaas.errors import InvalidRequest, WrongTask
from openmaas.runtimes import transformers_heads
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.runtimes.transformers_memory import declared_bytes
from openmaas.tasks.names import Task

# A server loads models in the background: per-load progress bars only clutter its logs.
transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

# Beyond this a tokenizer's `model_max_length` is the library's "no limit" placeholder (1e30).
SANE_MODEL_MAX_LENGTH = 100_000
# Resident memory over weight-file size: allocator slack and the activations of one batch.
MEMORY_OVERHEAD_FACTOR = 1.2
# Sub-batch limits for encoder passes: at most this many texts, and at most this many tokens
# once padded, so one long text does not make a whole batch of short ones pay for its padding.
MAX_TEXTS_PER_PASS = 64
# On CPU smaller passes win: a sorted pass of 16 pads far less than one of 32, and CPU
# throughput barely grows past 16 rows (two passes of 16: +8% sentences/s over one of 32).
MAX_TEXTS_PER_PASS_CPU = 16
MAX_PADDED_TOKENS_PER_PASS = 16_384
# Encodings made while counting a request's tokens, kept for the batch that embeds the texts
# (see `TransformersModel.remember_counted`): enough for a full queue and a running batch.
COUNTED_ENCODINGS_KEPT = 2048
# Model inputs by the `tokenizers.Encoding` attribute that holds them.
ENCODING_FIELDS = {
    "input_ids": "ids",
    "token_type_ids": "type_ids",
    "attention_mask": "attention_mask",
}

# Unpadded model inputs by name (`input_ids`, ...): a `BatchEncoding` or a plain dict.
ModelInputs = Mapping[str, Sequence[Sequence[int]]]


class AutoModelClass(Protocol):
    """`AutoModel`, `AutoModelForSequenceClassification`, ...: what `load_checkpoint` needs."""

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: Any, /, *args: Any, **kwargs: Any
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A network on its device with its tokenizer and the facts every task declares."""

    network: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    memory_bytes: int
    max_input_tokens: int | None


def load_checkpoint(
    source: ModelSource,
    options: LoadOptions,
    auto_class: type[AutoModelClass],
    *,
    subdirectory: str = "",
) -> Checkpoint:
    directory = source.directory / subdirectory if subdirectory else source.directory
    device = torch.device(options.device)
    if options.threads:
        torch.set_num_threads(options.threads)
    # float32 on CPU: half-precision checkpoints are slow there and drift from reference outputs.
    dtype: torch.dtype | str = torch.float32 if device.type == "cpu" else "auto"
    # Through `transformers_heads`: a head-pruned checkpoint loads into its own attention.
    network: PreTrainedModel = transformers_heads.from_pretrained(
        auto_class, directory, local_files_only=True, dtype=dtype
    )
    # Through nn.Module: transformers overrides both without annotations.
    module: torch.nn.Module = network
    module.eval()
    module.to(device)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    tensors = itertools.chain(network.parameters(), network.buffers())
    return Checkpoint(
        network=network,
        tokenizer=tokenizer,
        device=device,
        memory_bytes=sum(t.numel() * t.element_size() for t in tensors),
        max_input_tokens=_max_input_tokens(source.directory, tokenizer, network),
    )


def _max_input_tokens(
    directory: Path, tokenizer: PreTrainedTokenizerBase, network: PreTrainedModel
) -> int | None:
    positions = getattr(network.config, "max_position_embeddings", None)
    limit: int | None = None
    sentence_config = directory / "sentence_bert_config.json"
    if sentence_config.is_file():
        limit = json.loads(sentence_config.read_text(encoding="utf-8")).get("max_seq_length")
    if limit is None and 0 < tokenizer.model_max_length < SANE_MODEL_MAX_LENGTH:
        limit = int(tokenizer.model_max_length)
    if limit is None:
        return int(positions) if positions else None
    # A declared length past the position table would fail inside the model, not truncate.
    return min(int(limit), int(positions)) if positions else int(limit)


@dataclass(frozen=True, slots=True)
class SubBatch:
    indices: list[int]  # positions of these rows in the caller's input
    lengths: list[int]  # unpadded token counts
    inputs: dict[str, torch.Tensor]  # padded model inputs, on the device


# `Tokenizer.encode` holds the GIL while it runs (its batch twin releases it): cheaper for one
# short text, but a long one (10 MB: seconds) would stall every other thread, the event loop
# included, even when counted off the loop.
ENCODE_HOLDING_GIL_CHARS = 16_384
DECODE_HOLDING_GIL_IDS = 4_096  # the same for `decode`


class TransformersModel(LoadedModel):
    """A checkpoint serving one concept of task. Subclasses name their `auto_class`."""

    auto_class: ClassVar[type[AutoModelClass]]
    # Whether the texts counted are then run through `model_inputs` (embeddings): counting
    # keeps their encodings for it, so a text is tokenized once, not twice (a fast tokenizer
    # whose model inputs an encoding holds: ids, type ids, attention mask).
    remember_counted: ClassVar[bool] = False

    def __init__(self, source: ModelSource, tasks: frozenset[Task], checkpoint: Checkpoint):
        self.source = source
        self.tasks = tasks
        self.network = checkpoint.network
        self.tokenizer = checkpoint.tokenizer
        # The engine counts tokens on the event loop while a batch tokenizes in the model's
        # thread. A fast tokenizer's truncation settings are state inside the Rust object, and
        # two threads changing them at once fail ("Already borrowed"): counting gets a copy.
        self.counting_tokenizer = copy.deepcopy(checkpoint.tokenizer)
        # A fast tokenizer counts through its Rust core: `__call__` costs about as much Python
        # again as the tokenizing, per call. Without truncation or padding the core gives
        # what `__call__(truncation=False)` gives.
        self._counter: Tokenizer | None = None
        if self.counting_tokenizer.is_fast:
            self._counter = self.counting_tokenizer.backend_tokenizer
            self._counter.no_truncation()
            self._counter.no_padding()
        # Counted on the event loop, consumed in the model's thread.
        self._counted: dict[str, Encoding] = {}
        self._counted_lock = threading.Lock()
        self._reuses_counted = (
            self.remember_counted
            and self._counter is not None
            and set(self.tokenizer.model_input_names) <= ENCODING_FIELDS.keys()
        )
        self.device = checkpoint.device
        self.memory_bytes = checkpoint.memory_bytes
        self.max_input_tokens = checkpoint.max_input_tokens

    @classmethod
    def load(cls, source: ModelSource, options: LoadOptions) -> Self:
        return cls(
            source, frozenset({Task(source.task)}), load_checkpoint(source, options, cls.auto_class)
        )

    @classmethod
    def checkpoint_directory(cls, source: ModelSource) -> Path:
        """Where `load` finds the network's config and weights."""
        return source.directory

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._counter is None:
            encoded = self.counting_tokenizer(
                list(texts),
                add_special_tokens=True,
                truncation=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            return [max(1, len(ids)) for ids in encoded["input_ids"]]
        if len(texts) == 1 and len(texts[0]) <= ENCODE_HOLDING_GIL_CHARS:
            encodings = [self._counter.encode(texts[0], add_special_tokens=True)]
        else:
            encodings = self._counter.encode_batch(list(texts), add_special_tokens=True)
        if self._reuses_counted:
            limit = self.max_input_tokens
            with self._counted_lock:
                for text, encoding in zip(texts, encodings, strict=True):
                    # An over-long text is tokenized afresh, truncated, when it runs: keeping
                    # its full encoding would only hold memory (a 10 MB text: hundreds of MB).
                    if limit is None or len(encoding) <= limit:
                        self._counted[text] = encoding
                # Entries of requests that never reached a batch (rejected, cancelled) go
                # first: a dict iterates in insertion order.
                while len(self._counted) > COUNTED_ENCODINGS_KEPT:
                    del self._counted[next(iter(self._counted))]
        return [max(1, len(encoding)) for encoding in encodings]

    def detokenize(self, ids: Sequence[int]) -> str:
        vocabulary = self.counting_tokenizer.vocab_size
        bad = next((i for i in ids if not 0 <= i < vocabulary), None)
        if bad is not None:
            raise InvalidRequest(
                f"input: token id {bad} is outside the vocabulary of model "
                f"'{self.source.label}' (0..{vocabulary - 1})",
                param="input",
            )
        tokenizer = self.counting_tokenizer
        if self._counter is not None and len(ids) > DECODE_HOLDING_GIL_IDS:
            # `decode` holds the GIL (2.5M ids: 10 s with every other thread stopped); its
            # batch twin releases it. Then the wrapper's clean-up, as its `decode` does it
            # (transformers skips it for BPE models, where it would remove real spaces).
            raw = self._counter.decode_batch([list(ids)], skip_special_tokens=True)[0]
            bpe = type(self._counter.model).__name__ == "BPE"
            if tokenizer.clean_up_tokenization_spaces and not bpe:
                return str(tokenizer.clean_up_tokenization(raw))
            return str(raw)
        text = tokenizer.decode(list(ids), skip_special_tokens=True)
        return text if isinstance(text, str) else "".join(text)

    def unload(self) -> None:
        del self.network
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def tokenize(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, **kwargs: Any
    ) -> BatchEncoding:
        """Unpadded encodings, truncated to the model's limit (pairs: longest side first)."""
        limit = self.max_input_tokens
        encoded: BatchEncoding = self.tokenizer(
            list(texts),
            list(pairs) if pairs is not None else None,
            truncation=limit is not None,
            max_length=limit,
            **kwargs,
        )
        return encoded

    def model_inputs(self, texts: Sequence[str]) -> ModelInputs:
        """What `tokenize(texts)` gives, reusing the encodings `count_tokens` kept for texts
        within the model's limit (each is used once) and tokenizing only the rest."""
        if not self._reuses_counted:
            return self.tokenize(texts)
        with self._counted_lock:
            counted = [self._counted.pop(text, None) for text in texts]
        limit = self.max_input_tokens
        fresh_at = [
            i
            for i, encoding in enumerate(counted)
            if encoding is None or (limit is not None and len(encoding) > limit)
        ]
        if len(fresh_at) == len(texts):
            return self.tokenize(texts)
        keys = self.tokenizer.model_input_names
        inputs: dict[str, list[list[int]]] = {
            key: [
                getattr(encoding, ENCODING_FIELDS[key]) if encoding is not None else []
                for encoding in counted
            ]
            for key in keys
        }
        if fresh_at:
            fresh = self.tokenize([texts[i] for i in fresh_at])
            for key in keys:
                for row, i in enumerate(fresh_at):
                    inputs[key][i] = fresh[key][row]
        return inputs

    def sub_batches(
        self, encoded: ModelInputs, *, max_texts: int | None = None
    ) -> Iterator[SubBatch]:
        """Padded sub-batches in decreasing length order, so each pads only to its own longest
        row (and the largest allocation comes first, where it fails fastest)."""
        if max_texts is None:
            cpu = self.device.type == "cpu"
            max_texts = MAX_TEXTS_PER_PASS_CPU if cpu else MAX_TEXTS_PER_PASS
        keys = [k for k in self.tokenizer.model_input_names if k in encoded]
        rows = encoded["input_ids"]
        lengths = [len(ids) for ids in rows]
        order = sorted(range(len(rows)), key=lambda i: -lengths[i])
        start = 0
        while start < len(order):
            longest = max(1, lengths[order[start]])
            size = max(1, min(max_texts, MAX_PADDED_TOKENS_PER_PASS // longest))
            indices = order[start : start + size]
            start += size
            inputs = {key: self._padded(encoded[key], indices, longest, key) for key in keys}
            yield SubBatch(indices=indices, lengths=[lengths[i] for i in indices], inputs=inputs)

    def _padded(
        self, rows: Sequence[Sequence[int]], indices: Sequence[int], width: int, key: str
    ) -> torch.Tensor:
        # Right padding; masked positions never reach the results.
        fill = (self.tokenizer.pad_token_id or 0) if key == "input_ids" else 0
        array = np.full((len(indices), width), fill, dtype=np.int64)
        for row, i in enumerate(indices):
            array[row, : len(rows[i])] = rows[i]
        return torch.from_numpy(array).to(self.device)


class TransformersRuntime(Runtime):
    """Hugging Face checkpoints (safetensors or PyTorch weights) run with PyTorch."""

    name = "transformers"
    tasks = frozenset(
        {
            Task.EMBEDDING,
            Task.TEXT_CLASSIFICATION,
            Task.RERANK,
            Task.TOKEN_CLASSIFICATION,
            Task.TEXT_GENERATION,
            Task.TRANSLATION,
            Task.SUMMARIZATION,
            Task.IMAGE_CLASSIFICATION,
        }
    )

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        # The larger of the weight files and what the config declares: `from_pretrained`
        # allocates the declared network even when the files hold a fraction of it.
        weights = self._weight_file_bytes(source)
        declared: int | None = None
        try:
            task = Task(source.task)
        except ValueError:
            task = None  # the load refuses it, with its own message
        if task in self.tasks and task is not Task.IMAGE_CLASSIFICATION:
            model_class = _model_class(task)
            declared = declared_bytes(
                model_class.checkpoint_directory(source), model_class.auto_class
            )
        return max(weights, int((declared or 0) * MEMORY_OVERHEAD_FACTOR))

    def _weight_file_bytes(self, source: ModelSource) -> int:
        # Weights only: a directory often carries the same weights twice (.safetensors and
        # .bin) plus tokenizer files and exports for other runtimes.
        files = [p for p in source.directory.rglob("*.safetensors") if p.is_file()]
        if not files:
            files = [p for p in source.directory.rglob("*.bin") if p.is_file()]
        if not files:
            return super().estimate_memory_bytes(source)
        return int(sum(p.stat().st_size for p in files) * MEMORY_OVERHEAD_FACTOR)

    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        task = Task(source.task)
        if task not in self.tasks:
            served = ", ".join(sorted(self.tasks))
            raise WrongTask(
                f"model '{source.label}': the transformers runtime serves {served}, "
                f"not {task.value}",
                param="model",
            )
        if task is Task.IMAGE_CLASSIFICATION:
            from openmaas.runtimes.transformers_images import load_image_classifier

            return load_image_classifier(source, options)
        return _model_class(task).load(source, options)


def _model_class(task: Task) -> type[TransformersModel]:
    # Imported here, not at the top: the task modules subclass `TransformersModel` above.
    from openmaas.runtimes import transformers_encoders, transformers_generation

    classes: dict[Task, type[TransformersModel]] = {
        Task.EMBEDDING: transformers_encoders.EmbeddingModel,
        Task.TEXT_CLASSIFICATION: transformers_encoders.TextClassifier,
        Task.RERANK: transformers_encoders.CrossEncoder,
        Task.TOKEN_CLASSIFICATION: transformers_encoders.EntityTagger,
        Task.TEXT_GENERATION: transformers_generation.CausalLanguageModel,
        Task.TRANSLATION: transformers_generation.Translator,
        Task.SUMMARIZATION: transformers_generation.Summarizer,
    }
    return classes[task]
