"""OpenAI `POST /v1/audio/transcriptions` (multipart upload), served by speech models."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.responses import PlainTextResponse

from openmaas.api.deps import EngineDep, PrincipalDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter
from openmaas.api.responses import VERSION_HEADER, json_response, mark_model
from openmaas.errors import InvalidRequest
from openmaas.protocol.openai import TranscriptionResponse
from openmaas.tasks.speech_recognition import (
    SPEECH_RECOGNITION,
    Transcription,
    TranscriptionParams,
)

router = APIRouter(route_class=StrictJSONRoute, tags=["openai"], dependencies=[Depends(caller)])

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]


@router.post("/v1/audio/transcriptions", response_model=TranscriptionResponse)
async def create_transcription(
    request: Request,
    engine: EngineDep,
    who: PrincipalDep,
    file: Annotated[UploadFile, File(description="WAV, MP3 or FLAC audio.")],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
) -> Response:
    audio = await file.read()
    if not audio:
        raise InvalidRequest("file: the uploaded audio is empty", param="file")
    params = TranscriptionParams(language=language or None, prompt=prompt, temperature=temperature)
    served = await engine.infer(SPEECH_RECOGNITION, model, audio, params, caller=who)
    mark_model(request, served.version)
    result = served.results[0]
    meter(request, served.version, items=1, audio_seconds=result.duration_seconds)
    version = f"{served.version.model}:{served.version.version}"
    if response_format == "text":
        return PlainTextResponse(result.text, headers={VERSION_HEADER: version})
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(
            _subtitles(result, response_format), headers={VERSION_HEADER: version}
        )
    payload: dict[str, object] = {
        "text": result.text,
        "usage": {"type": "duration", "seconds": round(result.duration_seconds, 3)},
    }
    if response_format == "verbose_json":
        payload.update(
            task="transcribe",
            language=result.language,
            duration=result.duration_seconds,
            segments=[
                {"id": i, "start": s.start, "end": s.end, "text": s.text}
                for i, s in enumerate(result.segments)
            ],
        )
    return json_response(payload, served.version)


def _subtitles(result: Transcription, kind: str) -> str:
    separator = "," if kind == "srt" else "."

    def stamp(seconds: float) -> str:
        millis = round(seconds * 1000)
        hours, millis = divmod(millis, 3_600_000)
        minutes, millis = divmod(millis, 60_000)
        secs, millis = divmod(millis, 1000)
        return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"

    blocks = []
    for i, segment in enumerate(result.segments, start=1):
        timing = f"{stamp(segment.start)} --> {stamp(segment.end)}"
        text = segment.text.strip()
        blocks.append(f"{i}\n{timing}\n{text}\n" if kind == "srt" else f"{timing}\n{text}\n")
    body = "\n".join(blocks)
    return body if kind == "srt" else "WEBVTT\n\n" + body
