"""OpenAI `POST /v1/audio/speech`: text to audio in one of a speech model's voices, streamed
sentence by sentence as it is synthesized (`serving.speech`), in any of OpenAI's formats
(`speech_formats`), or as server-sent events (`stream_format: "sse"`).

The request is metered in characters of input (as OpenAI bills speech) and the seconds of
audio produced; a stream cut short is metered for what was produced.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from openmaas.api.deps import EngineDep, PrincipalDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.openai.speech_formats import MEDIA_TYPES, SpeechEncoder, open_encoder
from openmaas.api.responses import VERSION_HEADER, mark_model
from openmaas.errors import InvalidRequest
from openmaas.protocol.speech import SpeechAudioDelta, SpeechAudioDone, SpeechRequest, SpeechUsage
from openmaas.serving.speech import SpeechStream, synthesize
from openmaas.tasks.speech_synthesis import SpeechParams

router = APIRouter(route_class=StrictJSONRoute, tags=["openai"], dependencies=[Depends(caller)])


@router.post(
    "/v1/audio/speech",
    response_class=StreamingResponse,
    responses={200: {"content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))}}},
)
async def create_speech(
    body: SpeechRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> StreamingResponse:
    if body.instructions:
        raise InvalidRequest(
            "instructions: this server's voices take no instructions; leave them out and "
            "pick the voice and speed instead",
            param="instructions",
        )
    await reserve_tokens(request, lambda: len(body.input))
    params = SpeechParams(voice=body.voice, speed=body.speed)
    speech = await synthesize(engine, body.model, body.input, params, caller=who)
    mark_model(request, speech.version)
    meter(request, speech.version, input_tokens=speech.input_chars, items=1)
    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # proxies must not buffer the stream
        VERSION_HEADER: f"{speech.version.model}:{speech.version.version}",
    }
    if body.stream_format == "sse":
        return StreamingResponse(
            _events(speech, body.response_format, request),
            media_type="text/event-stream",
            headers=headers,
        )
    return StreamingResponse(
        _audio(speech, body.response_format, request),
        media_type=MEDIA_TYPES[body.response_format],
        headers=headers,
    )


async def _audio(
    speech: SpeechStream, response_format: str, request: Request
) -> AsyncIterator[bytes]:
    """The encoded audio, a piece at a time; encoding runs off the event loop."""
    encoder: SpeechEncoder | None = None
    seconds = 0.0
    try:
        async for audio in speech.audio:
            if encoder is None:
                encoder = open_encoder(response_format, audio.sample_rate)
            seconds += audio.seconds
            chunk = await asyncio.to_thread(encoder.encode, audio.samples)
            if chunk:
                yield chunk
        assert encoder is not None  # there is at least one piece
        tail = await asyncio.to_thread(encoder.finish)
        if tail:
            yield tail
    finally:
        await speech.audio.aclose()  # the client went away: stop synthesizing
        if encoder is not None:
            encoder.close()
        meter(
            request,
            speech.version,
            input_tokens=speech.input_chars,
            items=1,
            audio_seconds=round(seconds, 3),
        )


async def _events(
    speech: SpeechStream, response_format: str, request: Request
) -> AsyncIterator[bytes]:
    """OpenAI's speech events: the audio in base64 deltas, then the usage."""
    async for chunk in _audio(speech, response_format, request):
        delta = SpeechAudioDelta(audio=base64.b64encode(chunk).decode("ascii"))
        yield _event(delta.model_dump())
    usage = SpeechUsage(input_tokens=speech.input_chars, total_tokens=speech.input_chars)
    yield _event(SpeechAudioDone(usage=usage).model_dump())


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
