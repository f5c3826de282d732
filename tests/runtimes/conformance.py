"""The runtime conformance suite: what every runtime must do, whatever its format.

Each runtime's test module builds its models (tiny ones made in the test, or the real packaged
ones) and calls `check_conformance` once per model and task it serves, then adds its own
task-specific checks (quality on real models, character offsets, ...).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest

from openmaas.errors import WrongTask
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.tasks.catalogue import get_task, implements
from openmaas.tasks.names import Task
from openmaas.tasks.seq2seq import Seq2SeqParams
from openmaas.tasks.speech_recognition import TranscriptionParams
from openmaas.tasks.speech_synthesis import SpeechParams
from openmaas.tasks.text_generation import GenerationParams

TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Barack Obama visited Paris in March with Angela Merkel.",
    "I love this!",
    "A somewhat longer sentence, with punctuation; numbers like 42 and 3.14, and more words.",
)


def load_timed(runtime: Runtime, source: ModelSource, options: LoadOptions) -> LoadedModel:
    """Load, checking the declarations every runtime makes about a model."""
    estimate = runtime.estimate_memory_bytes(source)
    assert estimate > 0, "memory estimate must be positive"
    started = time.perf_counter()
    model = runtime.load(source, options)
    assert time.perf_counter() - started >= 0
    assert model.tasks, "a loaded model serves at least one task"
    assert model.tasks <= runtime.tasks, f"{model.tasks - runtime.tasks} not declared by runtime"
    assert Task(source.task) in model.tasks, f"loaded model does not serve {source.task}"
    for task in model.tasks:  # a model serves a task by implementing the task's protocol
        contract = get_task(task)
        assert implements(model, contract), f"{type(model).__name__} lacks {contract.protocol}"
    assert model.memory_bytes > 0
    assert model.source == source
    return model


def check_conformance(
    runtime: Runtime,
    source: ModelSource,
    options: LoadOptions | None = None,
    *,
    texts: Sequence[str] = TEXTS,
    audio: bytes | None = None,
) -> LoadedModel:
    """Load `source` and exercise its task; returns the loaded model for further checks."""
    model = load_timed(runtime, source, options or LoadOptions())
    task = Task(source.task)
    counts = model.count_tokens(list(texts))
    assert len(counts) == len(texts)
    assert all(isinstance(c, int) and c > 0 for c in counts)
    _check_wrong_task_refused(model)
    _check_input_limits(model, texts)
    if task is Task.EMBEDDING:
        _check_embedding(model, texts)
    elif task is Task.TEXT_CLASSIFICATION:
        _check_classification(model, texts)
    elif task is Task.TOKEN_CLASSIFICATION:
        _check_entities(model, texts)
    elif task is Task.TEXT_GENERATION:
        _check_generation(model)
    elif task in (Task.TRANSLATION, Task.SUMMARIZATION):
        _check_seq2seq(model, task, texts)
    elif task is Task.SPEECH_RECOGNITION:
        assert audio is not None, "speech models are checked with real audio"
        result = model.transcribe(audio, TranscriptionParams())
        assert result.text.strip()
        assert result.duration_seconds > 0
    elif task is Task.RERANK:
        scores = model.score_pairs([(texts[0], t) for t in texts])
        assert len(scores) == len(texts)
    elif task is Task.SPEECH_SYNTHESIS:
        _check_speech(model, texts)
    return model


def _check_speech(model: LoadedModel, texts: Sequence[str]) -> None:
    assert model.voices
    voice = model.voices[0]
    results = model.synthesize(list(texts[:2]), SpeechParams(voice=voice))
    assert len(results) == 2
    for audio in results:
        assert audio.samples.dtype == np.float32
        assert audio.samples.ndim == 1
        assert audio.sample_rate > 0
        assert audio.seconds > 0.2
        assert np.abs(audio.samples).max() <= 1.0
    again = model.synthesize([texts[0]], SpeechParams(voice=voice))[0]
    np.testing.assert_array_equal(again.samples, results[0].samples)  # deterministic
    faster = model.synthesize([texts[0]], SpeechParams(voice=voice, speed=2.0))[0]
    assert faster.seconds < 0.7 * results[0].seconds


def _check_input_limits(model: LoadedModel, texts: Sequence[str]) -> None:
    """The limits on one text's work are positive; a model that limits sentences counts them."""
    assert model.max_input_chars is None or model.max_input_chars > 0
    if model.max_input_sentences is not None:
        assert model.max_input_sentences > 0
        counts = model.count_sentences(list(texts))
        assert len(counts) == len(texts)
        assert all(isinstance(c, int) and c >= 0 for c in counts)


def _check_wrong_task_refused(model: LoadedModel) -> None:
    if Task.TRANSLATION not in model.tasks:
        with pytest.raises(WrongTask) as refused:
            model.translate(["x"], Seq2SeqParams())
        assert model.source.name in refused.value.message


def _check_embedding(model: LoadedModel, texts: Sequence[str]) -> None:
    vectors = model.embed(list(texts))
    dim = model.embedding_dimensions
    assert dim is not None
    assert dim > 0
    assert vectors.shape == (len(texts), dim)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    # Batching must not change results: padding is masked out.
    for i, text in enumerate(texts):
        single = model.embed([text])[0]
        np.testing.assert_allclose(single, vectors[i], rtol=1e-4, atol=1e-4)
    assert model.embed([]).shape == (0, dim)


def _check_classification(model: LoadedModel, texts: Sequence[str]) -> None:
    results = model.classify(list(texts))
    assert len(results) == len(texts)
    assert model.labels
    for i, ranking in enumerate(results):
        assert {r.label for r in ranking} == set(model.labels)
        scores = [r.score for r in ranking]
        assert scores == sorted(scores, reverse=True)
        single = model.classify([texts[i]])[0]
        assert [r.label for r in single][:1] == [r.label for r in ranking][:1]
        np.testing.assert_allclose([r.score for r in single], scores, rtol=1e-4, atol=1e-4)
    assert model.classify([]) == []


def _check_entities(model: LoadedModel, texts: Sequence[str]) -> None:
    results = model.extract_entities(list(texts))
    assert len(results) == len(texts)
    for text, entities in zip(texts, results, strict=True):
        for entity in entities:
            assert 0 <= entity.start < entity.end <= len(text)
            assert text[entity.start : entity.end] == entity.text
            assert entity.label
    assert model.extract_entities([]) == []


def _check_generation(model: LoadedModel) -> None:
    greedy = GenerationParams(max_tokens=5, temperature=0.0)
    first = list(model.generate("Hello", greedy))
    second = list(model.generate("Hello", greedy))
    assert "".join(d.text for d in first) == "".join(d.text for d in second)
    last = first[-1]
    assert last.finish_reason in ("stop", "length")
    assert all(d.finish_reason is None for d in first[:-1])
    assert 0 < last.completion_tokens <= 5
    assert last.prompt_tokens > 0
    sampled = GenerationParams(max_tokens=5, temperature=1.0, top_p=0.9, seed=7)
    a = "".join(d.text for d in model.generate("Hello", sampled))
    b = "".join(d.text for d in model.generate("Hello", sampled))
    assert a == b, "the same seed must give the same sample"
    prompt = model.chat_prompt([{"role": "user", "content": "Hi"}])
    assert "Hi" in prompt
    ids = model.encode_chat([{"role": "user", "content": "Hi"}])
    assert ids
    assert list(model.generate(ids, greedy))[-1].prompt_tokens == len(ids)


def _check_seq2seq(model: LoadedModel, task: Task, texts: Sequence[str]) -> None:
    params = Seq2SeqParams(max_tokens=8)
    run = model.translate if task is Task.TRANSLATION else model.summarize
    outputs = run(list(texts), params)
    assert len(outputs) == len(texts)
    assert all(isinstance(o, str) for o in outputs)
    assert run([], params) == []
