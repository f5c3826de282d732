"""OpenAI `POST /v1/chat/completions` and `POST /v1/completions` for causal language models,
with server-sent-event streaming (`stream: true`) ending in `data: [DONE]`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from openmaas.api.deps import EngineDep, PrincipalDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.responses import VERSION_HEADER, json_response, mark_model
from openmaas.errors import InvalidRequest
from openmaas.protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)
from openmaas.serving.engine import Stream
from openmaas.tasks.text_generation import GenerationDelta, GenerationParams

router = APIRouter(route_class=StrictJSONRoute, tags=["openai"], dependencies=[Depends(caller)])

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True, slots=True)
class _Envelope:
    """The fields every completion object and chunk repeats around its choices."""

    id: str
    object: str
    created: int
    model: str

    def __call__(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    if body.tools:
        raise InvalidRequest("tools are not supported by OpenMaaS models yet", param="tools")
    if body.response_format and body.response_format.get("type") not in (None, "text"):
        raise InvalidRequest(
            "response_format: only {'type': 'text'} is supported", param="response_format"
        )
    params = _params(body, body.max_completion_tokens or body.max_tokens)
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    await reserve_tokens(request, lambda: engine.generation_bound(params, messages=messages))
    stream = await engine.generate(body.model, params, messages=messages, caller=who)
    mark_model(request, stream.version)
    _meter(request, stream, None)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        chunk = _Envelope(ident, "chat.completion.chunk", created, body.model)

        def delta(content: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return chunk(
                [{"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}]
            )

        events = _sse(
            stream,
            delta({"role": "assistant", "content": ""}, None),
            lambda text: delta({"content": text}, None),
            lambda reason: delta({}, reason),
            chunk if _include_usage(body) else None,
            request,
        )
        return _streaming(events, stream)
    text, last = await _collect(stream.deltas)
    _meter(request, stream, last)
    message = {"role": "assistant", "content": text, "refusal": None}  # OpenAI: required
    choice = {"index": 0, "message": message, "finish_reason": last.finish_reason, "logprobs": None}
    envelope = _Envelope(ident, "chat.completion", created, body.model)
    return json_response(envelope([choice], usage=_usage(stream, last)), stream.version)


@router.post("/v1/completions", response_model=Completion)
async def create_completion(
    body: CompletionRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    if body.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix")
    prompt = body.prompt_text()
    params = _params(body, body.max_tokens)
    await reserve_tokens(request, lambda: engine.generation_bound(params, prompt=prompt))
    stream = await engine.generate(body.model, params, prompt=prompt, caller=who)
    mark_model(request, stream.version)
    _meter(request, stream, None)
    envelope = _Envelope(
        f"cmpl-{uuid.uuid4().hex}", "text_completion", int(time.time()), body.model
    )
    prefix = prompt if body.echo else ""

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return envelope([{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}])

    if body.stream:
        events = _sse(
            stream,
            choice(prefix, None) if prefix else None,
            lambda text: choice(text, None),
            lambda reason: choice("", reason),
            envelope if _include_usage(body) else None,
            request,
        )
        return _streaming(events, stream)
    text, last = await _collect(stream.deltas)
    _meter(request, stream, last)
    payload = choice(prefix + text, last.finish_reason)
    payload["usage"] = _usage(stream, last)
    return json_response(payload, stream.version)


def _include_usage(body: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(body.stream and body.stream_options and body.stream_options.include_usage)


def _params(
    body: ChatCompletionRequest | CompletionRequest, max_tokens: int | None
) -> GenerationParams:
    if body.n != 1:
        raise InvalidRequest("n: only 1 choice per request is supported", param="n")
    if body.presence_penalty or body.frequency_penalty:
        raise InvalidRequest(
            "presence_penalty and frequency_penalty are not supported; send 0 or omit them",
            param="presence_penalty" if body.presence_penalty else "frequency_penalty",
        )
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported", param="logprobs")
    return GenerationParams(
        max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_sequences(),
        seed=body.seed,
    )


async def _collect(
    deltas: AsyncGenerator[GenerationDelta, None],
) -> tuple[str, GenerationDelta]:
    parts: list[str] = []
    last: GenerationDelta | None = None
    try:
        async for delta in deltas:
            parts.append(delta.text)
            last = delta
    finally:
        await deltas.aclose()  # a cancelled request stops its generation here
    assert last is not None  # the engine yields at least the final delta
    return "".join(parts), last


def _meter(request: Request, stream: Stream, last: GenerationDelta | None) -> None:
    completion = last.completion_tokens if last is not None else 0
    meter(
        request,
        stream.version,
        input_tokens=stream.prompt_tokens,
        output_tokens=completion,
        items=1,
        generation=True,
    )


def _usage(stream: Stream, last: GenerationDelta) -> dict[str, int]:
    return {
        "prompt_tokens": stream.prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "total_tokens": stream.prompt_tokens + last.completion_tokens,
    }


async def _sse(
    stream: Stream,
    first: dict[str, Any] | None,
    text_chunk: Callable[[str], dict[str, Any]],
    final_chunk: Callable[[str], dict[str, Any]],
    usage_chunk: _Envelope | None,
    request: Request,
) -> AsyncIterator[bytes]:
    if first is not None:
        yield _event(first)
    last: GenerationDelta | None = None
    try:
        async for delta in stream.deltas:
            last = delta
            if delta.text:
                yield _event(text_chunk(delta.text))
    finally:
        await stream.deltas.aclose()  # the client went away: stop generating
        _meter(request, stream, last)  # what was generated is used, even if cut short
    assert last is not None
    yield _event(final_chunk(last.finish_reason or "stop"))
    if usage_chunk is not None:
        yield _event(usage_chunk([], usage=_usage(stream, last)))
    yield b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _streaming(events: AsyncIterator[bytes], stream: Stream) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not buffer the stream
            VERSION_HEADER: f"{stream.version.model}:{stream.version.version}",
        },
    )
