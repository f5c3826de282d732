"""The runtime interface: how one model format is loaded and executed.

A `Runtime` knows a format (transformers, onnx, spacy, ...). `Runtime.load` turns a registered
version's directory into a `LoadedModel`, which names the tasks it serves (`tasks`) and
implements, for each, that task's runtime protocol (`tasks.embedding.Embedder.embed`,
`tasks.text_classification.Classifier.classify`, ...): methods that take a whole *batch*. The
serving engine calls a loaded model from one worker thread at a time (its batcher serializes
batches), so implementations need no locking of their own. Runtimes see a directory and its
recorded params, never the registry.

Example::

    runtime = get_runtime("transformers")
    source = ModelSource.for_directory(path, task="embedding", runtime="transformers")
    model = runtime.load(source, LoadOptions())
    "embedding" in model.tasks  # -> True; the model implements tasks.embedding.Embedder
    vectors = model.embed(["hello", "world"])  # float32 array, shape (2, dim)
    model.unload()
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from openmaas.errors import InvalidRequest, WrongTask
from openmaas.images import ImageLimits
from openmaas.tasks.catalogue import task_of_method
from openmaas.tasks.embedding import FloatArray

# The file OpenMaaS writes into the models it produces (training, catalog conversions, its
# own formats: rules, linear heads, networks): {"task": ..., "runtime": ..., "format": ...}.
# Registry detection reads it first: it wins over every other clue.
NATIVE_SPEC = "openmaas.json"


def _keep_directory() -> None:
    return None


class RecordedVersion(Protocol):
    """What a source needs of a registered version (the registry's `ModelVersion` fits)."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def task(self) -> str: ...
    @property
    def runtime(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...


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
        version: RecordedVersion,
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
    # For models whose work grows with the square of a text's sentences (TextRank): the
    # server passes OPENMAAS_MAX_INPUT_SENTENCES.
    max_input_sentences: int = 400
    # Longest audio a speech model accepts per request, checked before decoding; None = any.
    max_audio_seconds: float | None = None
    # What one image may be, checked before decoding (OPENMAAS_MAX_IMAGE_MB / _PIXELS).
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 25_000_000

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)

    # Tenant-uploaded chat templates render under these bounds (runtimes/chat_templates.py).
    chat_template_timeout_s: float = 1.0
    max_prompt_chars: int = 2_000_000


# -- the interface ----------------------------------------------------------------------------


class LoadedModel(ABC):
    """A model in memory: what every task needs (token counts, limits, memory). The tasks
    it serves are the names in `tasks`; for each it implements that task's protocol (see
    `openmaas.tasks`), whose methods take a whole batch and return one result per input, in
    input order. The engine checks `tasks` once per lease before it calls a protocol method.
    """

    source: ModelSource
    tasks: frozenset[str]
    memory_bytes: int  # resident estimate, for the pool's budget
    max_input_tokens: int | None = None  # longest input accepted, when the model has a limit
    # Limits on the work one text may cost, refused (400) before it is batched even when the
    # request truncates: one item must not hold the model's only thread for long. The engine
    # also applies the server's OPENMAAS_MAX_INPUT_CHARS to every model.
    max_input_chars: int | None = None  # the model's own limit (spaCy's max_length)
    # Set by models whose work grows faster than the text with its sentences (TextRank); the
    # engine then counts them with `count_sentences`, off the event loop.
    max_input_sentences: int | None = None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, as the model counts them (before truncation, with special tokens).
        The batcher's token budget and usage reports use this."""
        return [max(1, len(text.split())) for text in texts]

    def count_sentences(self, texts: Sequence[str]) -> list[int]:
        """Sentences per text as the model splits them (at least that many), for models that
        set `max_input_sentences`. Called from any thread, beside running batches."""
        raise NotImplementedError(f"{type(self).__name__} sets no max_input_sentences")

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text for token ids (inputs given as ids, as OpenAI's embeddings API allows)."""
        raise InvalidRequest(
            f"model '{self.source.label}' does not accept token ids; send text", param="input"
        )

    def unload(self) -> None:  # noqa: B027 - optional hook; most models just drop references
        """Release memory held outside Python references (sessions, GPU memory)."""

    if not TYPE_CHECKING:  # hidden from type checking: callers use the task protocols

        def __getattr__(self, name: str) -> Any:
            # Only reached for attributes the model lacks. A method of a task the model does
            # not serve (`embed` on a tagger) is refused as the engine refuses the task.
            task = task_of_method(name)
            if task is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

            def refuse(*args: Any, **kwargs: Any) -> Any:
                raise self.wrong_task(task)

            return refuse

    def wrong_task(self, task: str) -> WrongTask:
        """The error for a protocol method of a task this model does not serve (a class that
        implements several tasks and was loaded for one)."""
        served = ", ".join(sorted(self.tasks)) or "nothing"
        return WrongTask(
            f"model '{self.source.label}' serves {served}, not {task}", param="model", task=task
        )


class Runtime(ABC):
    """A model format. Subclasses set `name` and `tasks` and implement `load`."""

    name: ClassVar[str]
    tasks: ClassVar[frozenset[str]]
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
    "keras": "openmaas.runtimes.keras:KerasRuntime",
    "espeak-ng": "openmaas.runtimes.espeak:EspeakRuntime",
    "piper": "openmaas.runtimes.piper:PiperRuntime",
    "openmaas-vision": "openmaas.runtimes.vision:VisionRuntime",
}


def register_runtime(name: str, target: str) -> None:
    """Make a runtime loadable by the name versions record: `target` is "module:Class",
    imported on first use (a plug-in package, or a test's runtime)."""
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"runtime target {target!r}: write it as 'package.module:Class'")
    RUNTIMES[name] = target


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
