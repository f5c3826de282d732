"""OpenAI `POST /v1/audio/transcriptions` and `POST /v1/audio/translations` (multipart
uploads), served by speech models. A translation is Whisper's translate task: the speech as
English text, which needs a multilingual model (an English-only one is refused, 400)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.responses import PlainTextResponse

from openmaas.api.deps import EngineDep, PrincipalDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter
from openmaas.api.responses import VERSION_HEADER, json_response, mark_model
from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest
from openmaas.protocol.openai import TranscriptionResponse
from openmaas.serving.engine import InferenceEngine
from openmaas.tasks.speech_recognition import (
    SPEECH_RECOGNITION,
    Purpose,
    Transcription,
    TranscriptionParams,
)

router = APIRouter(route_class=StrictJSONRoute, tags=["openai"], dependencies=[Depends(caller)])

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
Granularity = Literal["segment", "word"]


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
    # The openai client sends a list as `name[]` parts; curl users write `name` too.
    granularities: Annotated[
        list[Granularity] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    granularities_plain: Annotated[
        list[Granularity] | None, Form(alias="timestamp_granularities")
    ] = None,
) -> Response:
    wanted = {*(granularities or ()), *(granularities_plain or ())}
    if "word" in wanted and response_format != "verbose_json":
        raise InvalidRequest(
            "timestamp_granularities: word timestamps come with response_format=verbose_json",
            param="timestamp_granularities",
        )
    params = TranscriptionParams(
        language=language or None,
        prompt=prompt,
        temperature=temperature,
        word_timestamps="word" in wanted,
    )
    return await _answer(request, engine, who, file, model, params, response_format)


@router.post("/v1/audio/translations", response_model=TranscriptionResponse)
async def create_translation(
    request: Request,
    engine: EngineDep,
    who: PrincipalDep,
    file: Annotated[UploadFile, File(description="WAV, MP3 or FLAC audio.")],
    model: Annotated[str, Form(description="A multilingual Whisper model.")],
    prompt: Annotated[str | None, Form(description="In English.")] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
) -> Response:
    params = TranscriptionParams(prompt=prompt, temperature=temperature, task="translate")
    return await _answer(request, engine, who, file, model, params, response_format)


async def _answer(
    request: Request,
    engine: InferenceEngine,
    who: Principal,
    file: UploadFile,
    model: str,
    params: TranscriptionParams,
    response_format: ResponseFormat,
) -> Response:
    audio = await file.read()
    if not audio:
        raise InvalidRequest("file: the uploaded audio is empty", param="file")
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
        payload.update(_verbose(result, params.task))
    return json_response(payload, served.version)


def _verbose(result: Transcription, task: Purpose) -> dict[str, object]:
    verbose: dict[str, object] = {
        "task": task,
        # a translation's text is English, whatever was spoken (OpenAI: "english")
        "language": "english" if task == "translate" else result.language,
        "duration": result.duration_seconds,
        "segments": [
            {
                "id": i,
                "seek": s.seek,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": list(s.tokens),
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for i, s in enumerate(result.segments)
        ],
    }
    if result.words:
        verbose["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in result.words]
    return verbose


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
