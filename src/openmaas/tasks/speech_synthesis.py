"""Speech synthesis: text to audio in one of the model's voices. `/v1/audio/speech`.

A request's text is cut into pieces of a sentence or so (`speech_pieces`); each piece is one
item, synthesized and sent on before the next is done, so a long text starts playing after
its first sentence. Usage is counted in characters of input, as OpenAI bills speech, and
the seconds of audio produced.

Example::

    pieces = speech_pieces("Hello there. How are you?")  # -> ["Hello there.", "How are you?"]
    served = await engine.infer(SPEECH_SYNTHESIS, "espeak-ng", pieces[0],
                                SpeechParams(voice="en-us"), caller=who)
    served.results[0].samples  # float32 mono samples at served.results[0].sample_rate
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from openmaas.errors import InvalidRequest
from openmaas.tasks.contract import Plan, TaskContract, Usage
from openmaas.tasks.names import Task

MAX_INPUT_CHARS = 4096  # per request: OpenAI's limit on `input`
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's range; 1.0 is the voice's own pace
# A sentence longer than this is cut at its last comma, else space, before the limit: one
# piece must not hold the first audio back (espeak-ng speaks 400 characters in about 25 s).
MAX_PIECE_CHARS = 400
_SENTENCE_END = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+|\n\s*\n|\n(?=\s*[-*\u2022])")
_VOICES_SHOWN = 24  # voices named in an error message (GET /v1/models lists them all)


@dataclass(frozen=True, slots=True)
class SpeechParams:
    voice: str
    speed: float = 1.0  # MIN_SPEED..MAX_SPEED; 2.0 speaks twice as fast


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """Mono samples in [-1, 1] at `sample_rate` Hz."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate


@runtime_checkable
class Synthesizer(Protocol):
    tasks: frozenset[str]
    voices: tuple[str, ...]  # the names `SpeechParams.voice` takes

    def synthesize(self, texts: Sequence[str], params: SpeechParams) -> list[SpeechAudio]: ...


def speech_pieces(text: str) -> list[str]:
    """The text as pieces of a sentence or so (at most MAX_PIECE_CHARS each), in order;
    blank ones dropped."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        while len(sentence) > MAX_PIECE_CHARS:
            head = sentence[:MAX_PIECE_CHARS]
            cut = head.rfind(", ") + 1 or head.rfind(" ")
            if cut <= 0:
                cut = MAX_PIECE_CHARS  # one long word: cut it
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


def check_speed(speed: float) -> None:
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidRequest(
            f"speed is {speed}; send a speed from {MIN_SPEED} to {MAX_SPEED} (1.0 is the "
            "voice's own pace)",
            param="speed",
        )


def check_voice(model: Synthesizer, voice: str, label: str) -> None:
    if voice in model.voices:
        return
    shown = ", ".join(model.voices[:_VOICES_SHOWN])
    more = len(model.voices) - _VOICES_SHOWN
    if more > 0:
        shown += f" and {more} more (GET /v1/models/{label.rpartition(':')[0]} lists them)"
    raise InvalidRequest(
        f"voice: model '{label}' has no voice {voice!r}; its voices: {shown}", param="voice"
    )


class SpeechSynthesisTask(TaskContract[str, SpeechParams, SpeechAudio]):
    """One piece of text (see `speech_pieces`) to audio."""

    name = Task.SPEECH_SYNTHESIS.value
    protocol = Synthesizer

    def plan(
        self, model: Synthesizer, inputs: str, params: SpeechParams, *, label: str, truncate: bool
    ) -> Plan:
        check_speed(params.speed)
        check_voice(model, params.voice, label)
        if len(inputs) > MAX_INPUT_CHARS:
            raise InvalidRequest(
                f"input has {len(inputs):,} characters; send at most {MAX_INPUT_CHARS:,}",
                param="input",
            )
        if not inputs.strip():
            raise InvalidRequest("input: give the text to speak", param="input")

        def finish(results: list[SpeechAudio], tokens: list[int]) -> tuple[list[SpeechAudio], int]:
            return results, len(inputs)  # characters, as OpenAI counts speech

        return Plan(
            items=[inputs],
            run=lambda batch: model.synthesize(batch, params),
            # Pieces of concurrent requests share a batch only in the same voice and pace.
            key=f"speech:{params.voice}:{params.speed!r}",
            finish=finish,
            counts_tokens=False,
        )

    def usage(self, results: Sequence[SpeechAudio], prompt_tokens: int) -> Usage:
        return Usage(
            input_tokens=prompt_tokens,
            items=len(results),
            audio_seconds=sum(r.seconds for r in results),
        )

    def token_bound(self, inputs: str, params: SpeechParams) -> int:
        return len(inputs)


SPEECH_SYNTHESIS = SpeechSynthesisTask()
