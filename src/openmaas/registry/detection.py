"""Work out a model's task, runtime and format from its files, without loading weights."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from openmaas.errors import TaskNotDetected, UnsupportedSource
from openmaas.runtimes.base import NATIVE_SPEC
from openmaas.runtimes.keras_files import keras_file_in
from openmaas.runtimes.keras_intake import inspect_keras_model, recorded_params
from openmaas.runtimes.piper import find_piper_config, piper_params
from openmaas.tasks.names import Task

_TRANSLATION_TYPES = frozenset({"marian", "m2m_100", "nllb-moe", "fsmt", "mbart"})
_SUMMARIZATION_TYPES = frozenset(
    {"bart", "pegasus", "t5", "mt5", "led", "longt5", "bigbird_pegasus"}
)


@dataclass(frozen=True, slots=True)
class Detected:
    task: str | None
    runtime: str
    format: str
    # Params read from the files, recorded on the version (a Piper voice's voices).
    params: Mapping[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def detect(files: Mapping[str, Path], params: Mapping[str, Any] | None = None) -> Detected:
    """Inspect configs only (never weights). `files` maps relative paths to readable files;
    `params` are the version's (a Keras model's labels and preprocessing options)."""
    names = set(files)
    top = {name for name in names if "/" not in name}
    if NATIVE_SPEC in top:
        spec = _read_json(files[NATIVE_SPEC])
        if spec.get("runtime"):
            return Detected(
                task=spec.get("task"),
                runtime=str(spec["runtime"]),
                format=str(spec.get("format") or spec["runtime"]),
            )
    if keras_file_in(sorted(top)) is not None:
        # Refuses (400) a file that is no Keras 3 model, or whose loading would run code.
        keras_file = inspect_keras_model(files, params)
        recorded = recorded_params(keras_file, files, params or {})
        return Detected(task=keras_file.task, runtime="keras", format="keras", params=recorded)
    if {"meta.json", "config.cfg"} <= top:
        meta = _read_json(files["meta.json"])
        components = list(meta.get("pipeline") or []) + list(meta.get("components") or [])
        task = Task.TOKEN_CLASSIFICATION.value if "ner" in components else None
        return Detected(task=task, runtime="spacy", format="spacy")
    config = _read_json(files["config.json"]) if "config.json" in top else {}
    if "model.bin" in top and any(
        v in top
        for v in (
            "vocabulary.txt",
            "vocabulary.json",
            "shared_vocabulary.txt",
            "shared_vocabulary.json",
        )
    ):
        whisper_like = "suppress_ids_begin" in config or "lang_ids" in config
        task = Task.SPEECH_RECOGNITION.value if whisper_like else None
        return Detected(task=task, runtime="ctranslate2", format="ctranslate2")
    onnx_files = sorted(n for n in names if n.endswith(".onnx"))
    piper = find_piper_config(files) if onnx_files else None
    if piper is not None:  # an .onnx graph with Piper's config: a neural voice
        return Detected(
            task=Task.SPEECH_SYNTHESIS.value,
            runtime="piper",
            format="piper",
            params=piper_params(piper[1]),
        )
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    has_other_weights = any(
        PurePosixPath(n).suffix in (".bin", ".pt", ".pth", ".h5", ".msgpack") for n in names
    )
    task = _task_from_transformers_config(config, names)
    if onnx_files:
        return Detected(task=task, runtime="onnx", format="onnx")
    if config and (has_safetensors or has_other_weights):
        fmt = "safetensors" if has_safetensors else "pytorch-pickle"
        return Detected(task=task, runtime="transformers", format=fmt)
    raise UnsupportedSource(
        "could not recognise the model format: expected a Hugging Face directory (config.json "
        "with .safetensors weights), an .onnx file, a spaCy pipeline (meta.json + config.cfg), "
        f"a CTranslate2 directory (model.bin + vocabulary), a Keras .keras file or an "
        f"{NATIVE_SPEC} spec; "
        f"found {sorted(top)[:12]}",
        param="source",
    )


def _task_from_transformers_config(config: dict[str, Any], names: set[str]) -> str | None:
    if "modules.json" in names or "config_sentence_transformers.json" in names:
        return Task.EMBEDDING.value
    model_type = str(config.get("model_type", ""))
    for arch in config.get("architectures") or []:
        arch = str(arch)
        if arch.endswith("ForSequenceClassification"):
            # One output and no label names: a cross-encoder scoring (query, document) pairs.
            labels = config.get("id2label") or {}
            if config.get("num_labels", len(labels) or 2) == 1 or len(labels) == 1:
                return Task.RERANK.value
            return Task.TEXT_CLASSIFICATION.value
        if arch.endswith("ForTokenClassification"):
            return Task.TOKEN_CLASSIFICATION.value
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return Task.TEXT_GENERATION.value
        if arch.endswith(("ForImageClassification",)):
            return Task.IMAGE_CLASSIFICATION.value
        if arch.endswith(("ForCTC", "ForSpeechSeq2Seq")) or model_type == "whisper":
            return Task.SPEECH_RECOGNITION.value
        if arch.endswith(("ForConditionalGeneration", "ForSeq2SeqLM", "MTModel")):
            if model_type in _TRANSLATION_TYPES:
                return Task.TRANSLATION.value
            if model_type in _SUMMARIZATION_TYPES:
                return Task.SUMMARIZATION.value
            return None
        if arch.endswith("Model") and "For" not in arch:
            return Task.EMBEDDING.value
    return None


def require_task(detected: Detected, given: str | None) -> str:
    """The task to record: the caller's if given, else the detected one."""
    if given:
        try:
            return Task(given).value
        except ValueError:
            raise TaskNotDetected(
                f"unknown task {given!r}; known tasks: {', '.join(t.value for t in Task)}",
                param="task",
            ) from None
    if detected.task:
        return detected.task
    raise TaskNotDetected(
        f"could not tell the task of this {detected.runtime} model from its files; pass one "
        f'of: {", ".join(t.value for t in Task)} (CLI: --task, API: "task")',
        param="task",
    )
