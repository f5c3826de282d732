"""Speech recognition: one audio file's bytes to text with timed segments.
`/v1/audio/transcriptions`, and v2 (`AUDIO` in, `TEXT_OUT` out). Usage is counted in seconds
of audio, not tokens.

Example::

    served = await engine.infer(SPEECH_RECOGNITION, "whisper-tiny", wav_bytes,
                                TranscriptionParams(language="en"), caller=who)
    served.results[0].text  # -> "hello world"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from openmaas.tasks.contract import Plan, TaskContract, Usage
from openmaas.tasks.names import Task
from openmaas.tasks.tensors import (
    AUDIO_INPUT,
    ModelFacts,
    Outputs,
    TensorSpec,
    decode_audio,
    strings,
)
from openmaas.tasks.tensors import typed_param as param


@dataclass(frozen=True, slots=True)
class TranscriptionSegment:
    start: float  # seconds
    end: float
    text: str
    # Whisper's decoding details, as OpenAI's verbose_json reports them (0 / () from runtimes
    # that have none): the window's offset in 10 ms frames, the tokens decoded, the
    # temperature that was kept, and the quality figures its fallback decides on.
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True, slots=True)
class TranscriptionWord:
    word: str
    start: float  # seconds
    end: float


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    language: str | None
    duration_seconds: float
    segments: tuple[TranscriptionSegment, ...] = ()
    words: tuple[TranscriptionWord, ...] = ()  # when TranscriptionParams.word_timestamps


Purpose = Literal["transcribe", "translate"]


@dataclass(frozen=True, slots=True)
class TranscriptionParams:
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    # "translate": the speech as English text (Whisper's translate task), whatever its language
    task: Purpose = "transcribe"


@runtime_checkable
class Transcriber(Protocol):
    tasks: frozenset[str]

    def transcribe(self, audio: bytes, params: TranscriptionParams) -> Transcription: ...


class SpeechRecognitionTask(TaskContract[bytes, TranscriptionParams, Transcription]):
    name = Task.SPEECH_RECOGNITION.value
    protocol = Transcriber
    v2_input = AUDIO_INPUT
    v2_output_names = ("TEXT_OUT",)

    def default_params(self) -> TranscriptionParams:
        return TranscriptionParams()

    def plan(
        self,
        model: Transcriber,
        inputs: bytes,
        params: TranscriptionParams,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        def finish(
            results: list[Transcription], tokens: list[int]
        ) -> tuple[list[Transcription], int]:
            return results, 0

        return Plan(
            items=[inputs],
            run=lambda batch: [model.transcribe(audio, params) for audio in batch],
            key=f"transcribe:{params!r}",
            finish=finish,
            one_at_a_time=True,
            counts_tokens=False,
        )

    def usage(self, results: Sequence[Transcription], prompt_tokens: int) -> Usage:
        return Usage(items=1, audio_seconds=results[0].duration_seconds)

    def v2_inputs(self, values: Sequence[bytes]) -> bytes:
        return decode_audio(values)

    def v2_params(self, parameters: Mapping[str, object]) -> TranscriptionParams:
        return TranscriptionParams(
            language=param(parameters, "language", str),
            prompt=param(parameters, "prompt", str),
            temperature=param(parameters, "temperature", float) or 0.0,
        )

    def v2_outputs(self, facts: ModelFacts) -> list[TensorSpec]:
        return [TensorSpec("TEXT_OUT", "BYTES", (1,))]

    def v2_encode(self, results: Sequence[Transcription], facts: ModelFacts) -> Outputs:
        return {"TEXT_OUT": strings([results[0].text])}


SPEECH_RECOGNITION = SpeechRecognitionTask()
