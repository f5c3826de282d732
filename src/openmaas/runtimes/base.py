"""The runtime interface: how one model format is loaded and executed.

A `Runtime` knows a format (transformers, onnx, spacy, ...). `Runtime.load` turns a registered
version's directory into a `LoadedModel`, which runs *batches* for the tasks it serves. The
serving engine calls a loaded model from one worker thread at a time (its batcher serializes
batches), so implementations need no locking of their own.

Example::

    runtime = get_runtime("transformers")
    source = ModelSource.for_directory(path, task="embedding", runtime="transformers")
    model = runtime.load(source, LoadOptions())
    vectors = model.embed(["hello", "world"])  # float32 array, shape (2, dim)
    model.unload()
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from openmaas.errors import InvalidRequest, WrongTask
from openmaas.registry.entities import ModelVersion
from openmaas.tasks.names import Task

FloatArray = npt.NDArray[np.float32]


def _keep_directory() -> None:
    return None


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What a runtime needs to know about the version it loads."""

    name: str  # the registered model name (for messages)
    version: int
    task: str  # a Task value
    runtime: str
    format: str
    params: Mapping[str, Any]  # the version's recorded params (pooling, normalize, labels, ...)
    directory: Path  # hash-verified, read-only
    # Deletes `directory` when it is a private decrypted copy of a version encrypted at rest
    # (the pool calls it once the runtime has loaded); does nothing for stored directories.
    release_directory: Callable[[], None] = field(
        default=_keep_directory, repr=False, compare=False
    )

    @classmethod
    def for_directory(
        cls,
        directory: Path,
        *,
        task: str,
        runtime: str,
        name: str = "model",
        version: int = 1,
        format: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> ModelSource:
        return cls(
            name=name,
            version=version,
            task=task,
            runtime=runtime,
            format=format,
            params=dict(params or {}),
            directory=directory,
        )

    @classmethod
    def from_version(
        cls,
        version: ModelVersion,
        directory: Path,
        *,
        release_directory: Callable[[], None] = _keep_directory,
    ) -> ModelSource:
        return cls(
            name=version.model,
            version=version.version,
            task=version.task,
            runtime=version.runtime,
            format=version.format,
            params=dict(version.params),
            directory=directory,
            release_directory=release_directory,
        )

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


# Opens another registered model by reference, for runtimes that build on one (a linear head
# over an encoder). Returns the dependency's source, hash-verified.
DependencyOpener = Callable[[str], ModelSource]


def _no_dependencies(reference: str) -> ModelSource:
    raise InvalidRequest(f"this model needs '{reference}', but no registry is available")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    device: str = "cpu"  # "cpu" or "cuda[:n]"
    threads: int | None = None  # intra-op threads; None = the library's default
    open_dependency: DependencyOpener = field(default=_no_dependencies)


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Entity:
    text: str
    label: str
    start: int  # character offsets into the input text, end exclusive
    end: int
    score: float | None = None


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationDelta:
    """One step of a generation stream: new text, and on the last step why it ended."""

    text: str
    prompt_tokens: int
    completion_tokens: int  # so far, cumulative
    finish_reason: str | None = None  # "stop" | "length" on the last delta


@dataclass(frozen=True, slots=True)
class Seq2SeqParams:
    max_tokens: int = 256
    source_language: str | None = None  # translation only
    target_language: str | None = None
    ratio: float | None = None  # extractive summarization: share of sentences kept


@dataclass(frozen=True, slots=True)
class TranscriptionSegment:
    start: float  # seconds
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    language: str | None
    duration_seconds: float
    segments: tuple[TranscriptionSegment, ...] = ()


@dataclass(frozen=True, slots=True)
class TranscriptionParams:
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0


# -- the interface ----------------------------------------------------------------------------


class LoadedModel(ABC):
    """A model in memory. Each task method takes a whole batch and returns one result per
    input, in input order. Methods for tasks the model does not serve raise `WrongTask`."""

    source: ModelSource
    tasks: frozenset[Task]
    memory_bytes: int  # resident estimate, for the pool's budget
    max_input_tokens: int | None = None  # longest input accepted, when the model has a limit
    embedding_dimensions: int | None = None  # embedding models
    # True when leading dimensions of an embedding are a valid smaller embedding
    # (Matryoshka-trained), so `dimensions` may truncate.
    truncatable_dimensions: bool = False
    labels: tuple[str, ...] = ()  # classifiers and taggers

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, as the model counts them (before truncation, with special tokens).
        The batcher's token budget and usage reports use this."""
        return [max(1, len(text.split())) for text in texts]

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text for token ids (inputs given as ids, as OpenAI's embeddings API allows)."""
        raise InvalidRequest(
            f"model '{self.source.label}' does not accept token ids; send text", param="input"
        )

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """(len(texts), embedding_dimensions) float32. Inputs longer than `max_input_tokens`
        are truncated (the engine refuses them first when the caller turned truncation off)."""
        raise self._wrong(Task.EMBEDDING)

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        """Every label with its score, highest first."""
        raise self._wrong(Task.TEXT_CLASSIFICATION)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Relevance of (query, document) pairs: cross-encoders."""
        raise self._wrong(Task.RERANK)

    def extract_entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        raise self._wrong(Task.TOKEN_CLASSIFICATION)

    def generate(
        self, prompt: str | Sequence[int], params: GenerationParams
    ) -> Iterator[GenerationDelta]:
        """Stream a continuation of `prompt` (text, or token ids from `encode_chat`); the
        last delta carries `finish_reason`."""
        raise self._wrong(Task.TEXT_GENERATION)

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt for a chat: the tokenizer's chat template when it has one."""
        raise self._wrong(Task.TEXT_GENERATION)

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """`chat_prompt` as token ids, in which message contents are only ever text: a
        control token written in a message (`<|im_end|>`) cannot end its turn or open one."""
        raise self._wrong(Task.TEXT_GENERATION)

    def translate(self, texts: Sequence[str], params: Seq2SeqParams) -> list[str]:
        raise self._wrong(Task.TRANSLATION)

    def summarize(self, texts: Sequence[str], params: Seq2SeqParams) -> list[str]:
        raise self._wrong(Task.SUMMARIZATION)

    def transcribe(self, audio: bytes, params: TranscriptionParams) -> Transcription:
        raise self._wrong(Task.SPEECH_RECOGNITION)

    def unload(self) -> None:  # noqa: B027 - optional hook; most models just drop references
        """Release memory held outside Python references (sessions, GPU memory)."""

    def _wrong(self, task: Task) -> WrongTask:
        served = ", ".join(sorted(t.value for t in self.tasks)) or "nothing"
        return WrongTask(
            f"model '{self.source.label}' serves {served}, not {task.value}", param="model"
        )


class Runtime(ABC):
    """A model format. Subclasses set `name` and `tasks` and implement `load`."""

    name: ClassVar[str]
    tasks: ClassVar[frozenset[Task]]
    # False: `load` reads everything it needs, so the directory may be deleted once it returns
    # (a decrypted copy is; files the model memory-maps stay readable after deletion on POSIX).
    # True for a runtime that opens files by path later: the pool keeps a decrypted copy
    # until the model is unloaded.
    reads_files_after_load: ClassVar[bool] = False

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        """Resident memory once loaded; by default the size of the files."""
        return sum(p.stat().st_size for p in source.directory.rglob("*") if p.is_file())

    @abstractmethod
    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel: ...


# Runtime name (as recorded on a version) -> "module:Class". Imported on first use so the server
# starts without importing torch, onnxruntime or spaCy.
RUNTIMES: dict[str, str] = {
    "transformers": "openmaas.runtimes.transformers:TransformersRuntime",
    "onnx": "openmaas.runtimes.onnx:OnnxRuntime",
    "spacy": "openmaas.runtimes.spacy:SpacyRuntime",
    "ctranslate2": "openmaas.runtimes.whisper:WhisperRuntime",
    "rules": "openmaas.runtimes.rules:RulesRuntime",
    "linear-head": "openmaas.runtimes.linear_head:LinearHeadRuntime",
    "openmaas-nn": "openmaas.runtimes.textnn:TextNetworkRuntime",
    "word2vec": "openmaas.runtimes.word_vectors:WordVectorsRuntime",
}


def get_runtime(name: str) -> Runtime:
    target = RUNTIMES.get(name)
    if target is None:
        known = ", ".join(sorted(RUNTIMES))
        raise InvalidRequest(f"no runtime '{name}' (this server has: {known})", param="model")
    module_name, class_name = target.split(":")
    cls: type[Runtime] = getattr(importlib.import_module(module_name), class_name)
    return cls()


def l2_normalize(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return result


def softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def ranked(labels: Sequence[str], scores: Sequence[float]) -> list[LabelScore]:
    """All labels with scores, highest first."""
    pairs = [
        LabelScore(label=label, score=float(score))
        for label, score in zip(labels, scores, strict=True)
    ]
    return sorted(pairs, key=lambda p: p.score, reverse=True)
