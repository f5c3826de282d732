"""Wire models of OpenAI's `POST /v1/audio/speech` (field names and defaults as OpenAI's, so
the official `openai` client works unchanged)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# OpenAI's limits on `input` and `speed`.
MAX_SPEECH_INPUT_CHARS = 4096
MIN_SPEED, MAX_SPEED = 0.25, 4.0

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class SpeechRequest(BaseModel):
    # Unknown fields are ignored, as OpenAI's own API does for forward compatibility.
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str = Field(
        max_length=MAX_SPEECH_INPUT_CHARS,
        description="The text to speak; it is synthesized and sent sentence by sentence.",
    )
    voice: str = Field(
        description="One of the model's voices (GET /v1/models lists them); OpenAI's "
        '`{"id": ...}` form is taken too.'
    )
    instructions: str | None = Field(
        default=None, description="Not supported by OpenMaaS's voices: refused when given."
    )
    response_format: SpeechFormat = "mp3"
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    stream_format: Literal["audio", "sse"] = Field(
        default="audio",
        description="`audio`: the audio file's bytes; `sse`: `speech.audio.delta` events "
        "with base64 audio, then `speech.audio.done` with the usage.",
    )

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_id(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"id"}:
            return value["id"]  # OpenAI's custom-voice form: {"id": "voice_1234"}
        return value


class SpeechUsage(BaseModel):
    input_tokens: int = Field(description="Characters of input, as OpenAI counts speech.")
    output_tokens: int = 0
    total_tokens: int


class SpeechAudioDelta(BaseModel):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str  # base64


class SpeechAudioDone(BaseModel):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage
