"""Whisper speech recognition on CTranslate2, through faster-whisper.

The model directory is a CTranslate2 conversion (model.bin, config.json, tokenizer.json).
Audio arrives as the bytes of a file in any container FFmpeg reads (WAV, FLAC, MP3, OGG,
M4A, WebM) and is decoded in memory to 16 kHz mono, refused past `LoadOptions.max_audio_seconds`
(see `runtimes/audio.py`).

Version params: `language` (the default when a request names none), `beam_size` (5). A request
may ask for word timestamps and for the translate task (English text; multilingual models only).

Example::

    source = ModelSource.for_directory(path, task="speech-recognition", runtime="ctranslate2",
                                       params={"language": "en"})
    model = WhisperRuntime().load(source, LoadOptions(threads=4))
    model.transcribe(Path("clip.wav").read_bytes(), TranscriptionParams()).text
"""

from __future__ import annotations

from typing import Any

from openmaas.errors import ModelLoadFailed, UnsupportedLanguage
from openmaas.runtimes.audio import decode_audio_bytes as decode_audio_bytes
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime
from openmaas.tasks.names import Task
from openmaas.tasks.speech_recognition import (
    Transcription,
    TranscriptionParams,
    TranscriptionSegment,
    TranscriptionWord,
)

# Whisper's own decoding schedule: greedy first, resampled hotter when a window's output
# looks like a failure (repetitive or improbable).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_BEAM_SIZE = 5


class WhisperRuntime(Runtime):
    """CTranslate2 Whisper directories (faster-whisper); int8 on CPU, float16 on CUDA."""

    name = "ctranslate2"
    tasks = frozenset({Task.SPEECH_RECOGNITION})

    def load(self, source: ModelSource, options: LoadOptions) -> WhisperModel:
        return WhisperModel(source, options, memory_bytes=self.estimate_memory_bytes(source))


class WhisperModel(LoadedModel):
    def __init__(self, source: ModelSource, options: LoadOptions, *, memory_bytes: int) -> None:
        from faster_whisper import WhisperModel as FasterWhisper

        self.source = source
        self.memory_bytes = memory_bytes
        self.tasks = frozenset({Task.SPEECH_RECOGNITION})
        if Task(source.task) is not Task.SPEECH_RECOGNITION:
            raise ModelLoadFailed(
                f"{source.label}: the ctranslate2 runtime serves speech-recognition only"
            )
        device, _, index = options.device.partition(":")
        on_gpu = device == "cuda"
        try:
            self._model: Any = FasterWhisper(
                str(source.directory),
                device="cuda" if on_gpu else "cpu",
                device_index=int(index or 0),
                compute_type="float16" if on_gpu else "int8",
                cpu_threads=options.threads or 0,  # 0: CTranslate2's default
            )
        except (RuntimeError, ValueError, OSError) as exc:  # CTranslate2 reports as RuntimeError
            raise ModelLoadFailed(f"{source.label}: faster-whisper cannot load it: {exc}") from exc
        self._languages = frozenset(self._model.supported_languages)
        default = source.params.get("language")
        self._default_language = str(default) if default else None
        self._beam_size = int(source.params.get("beam_size") or DEFAULT_BEAM_SIZE)
        self._max_audio_seconds = options.max_audio_seconds

    def transcribe(self, audio: bytes, params: TranscriptionParams) -> Transcription:
        samples = decode_audio_bytes(audio, max_seconds=self._max_audio_seconds)
        language = self._language(params.language or self._default_language)
        temperature = FALLBACK_TEMPERATURES if params.temperature == 0 else params.temperature
        if params.task == "translate" and not self._model.model.is_multilingual:
            raise UnsupportedLanguage(
                f"model '{self.source.label}' is English-only and cannot translate: Whisper "
                "translates speech into English with a multilingual model (whisper-base, "
                "whisper-small, ..., not a `.en` one); register one and name it",
                param="model",
            )
        segments, info = self._model.transcribe(
            samples,
            language=language,
            task=params.task,
            initial_prompt=params.prompt or None,
            temperature=temperature,
            beam_size=self._beam_size,
            word_timestamps=params.word_timestamps,
        )
        decoded = list(segments)  # a generator: decoding happens here
        parts = tuple(
            TranscriptionSegment(
                start=float(s.start),
                end=float(s.end),
                text=s.text.strip(),
                seek=int(s.seek),
                tokens=tuple(int(t) for t in s.tokens),
                temperature=float(s.temperature or 0.0),
                avg_logprob=float(s.avg_logprob),
                compression_ratio=float(s.compression_ratio),
                no_speech_prob=float(s.no_speech_prob),
            )
            for s in decoded
        )
        words = tuple(
            TranscriptionWord(word=w.word.strip(), start=float(w.start), end=float(w.end))
            for s in decoded
            for w in s.words or ()
        )
        return Transcription(
            text=" ".join(p.text for p in parts if p.text),
            language=info.language,
            duration_seconds=float(info.duration),
            segments=parts,
            words=words,
        )

    def unload(self) -> None:
        self._model = None

    def _language(self, requested: str | None) -> str | None:
        """A supported Whisper language code, or None to detect it."""
        if requested is None:
            return None
        code = requested.strip().lower().replace("_", "-").partition("-")[0]  # en-US -> en
        if code not in self._languages:
            supported = ", ".join(sorted(self._languages))
            raise UnsupportedLanguage(
                f"model '{self.source.label}' does not transcribe {requested!r} "
                f"(it supports: {supported})",
                param="language",
            )
        return code
