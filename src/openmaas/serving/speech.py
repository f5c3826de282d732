"""Speech as it is produced: a text's pieces (`tasks.speech_synthesis.speech_pieces`), each
synthesized through the engine (router → pool → batcher) and handed on in order, the next
piece already being synthesized while the current one is sent.

The first piece is synthesized before `synthesize` returns, so a bad voice or model is an
error before any response starts. Later pieces go to the version the first one resolved to
(an alias moved or a traffic split mid-text must not change the voice halfway).

Example::

    speech = await synthesize(engine, "espeak-ng", "Hello. Goodbye.",
                              SpeechParams(voice="en-us"), caller=who)
    async for audio in speech.audio:  # two SpeechAudio, one per sentence
        ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import suppress
from dataclasses import dataclass

from openmaas.auth.entities import Principal
from openmaas.errors import InvalidRequest
from openmaas.registry.entities import ModelVersion
from openmaas.registry.names import qualified
from openmaas.serving.engine import InferenceEngine
from openmaas.tasks.speech_synthesis import (
    MAX_INPUT_CHARS,
    SPEECH_SYNTHESIS,
    SpeechAudio,
    SpeechParams,
    check_speed,
    speech_pieces,
)


@dataclass(frozen=True, slots=True)
class SpeechStream:
    version: ModelVersion
    input_chars: int  # what the request is metered for
    # Consume it to the end or `aclose()` it (a pending piece is then cancelled).
    audio: AsyncGenerator[SpeechAudio, None]


async def synthesize(
    engine: InferenceEngine,
    reference: str,
    text: str,
    params: SpeechParams,
    *,
    caller: Principal,
) -> SpeechStream:
    check_speed(params.speed)
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidRequest(
            f"input has {len(text):,} characters; send at most {MAX_INPUT_CHARS:,} a request "
            "(split longer texts)",
            param="input",
        )
    pieces = speech_pieces(text)
    if not pieces:
        raise InvalidRequest("input: give the text to speak", param="input")
    first = await engine.infer(SPEECH_SYNTHESIS, reference, pieces[0], params, caller=caller)
    version = first.version
    exact = f"{qualified(version.project, version.model)}:{version.version}"

    async def piece(text: str) -> SpeechAudio:
        served = await engine.infer(SPEECH_SYNTHESIS, exact, text, params, caller=caller)
        return served.results[0]

    async def audio() -> AsyncGenerator[SpeechAudio, None]:
        pending: asyncio.Task[SpeechAudio] | None = None
        try:
            rest = iter(pieces[1:])
            following = next(rest, None)
            if following is not None:
                pending = asyncio.ensure_future(piece(following))
            yield first.results[0]
            while pending is not None:
                current = await pending
                following = next(rest, None)
                pending = None if following is None else asyncio.ensure_future(piece(following))
                yield current
        finally:
            if pending is not None:  # the client went away: stop, and collect its outcome
                pending.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await pending

    return SpeechStream(version=version, input_chars=len(text), audio=audio())
