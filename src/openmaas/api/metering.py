"""Per-request metering: a usage record for every authenticated request, tokens charged,
and the caller's remaining per-minute limits as `x-ratelimit-*` response headers.

Routes say what a request consumed with `meter(request, ...)`; the middleware, after the
response has been sent (streams included), hands one `UsageRecord` to the buffered
recorder and charges the tokens to the caller's rate limits and quotas.

Example::

    meter(request, served.version, input_tokens=served.prompt_tokens, items=len(texts))
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.auth.entities import Principal
from openmaas.auth.ratelimit import RateLimitStatus
from openmaas.metering.usage import UsageRecord
from openmaas.observability.logs import request_id_var
from openmaas.registry.entities import ModelVersion

if TYPE_CHECKING:
    from openmaas.wiring import Services

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # no response was started: the client went away first


@dataclass(slots=True)
class RequestUsage:
    model: str = ""
    version: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    items: int = 0
    audio_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def meter(
    request: Request,
    version: ModelVersion | None = None,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    items: int = 0,
    audio_seconds: float = 0.0,
) -> None:
    """Record what this request consumed (call again to update, e.g. at a stream's end)."""
    request.state.usage = RequestUsage(
        model=version.model if version else "",
        version=version.version if version else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        items=items,
        audio_seconds=audio_seconds,
    )


class MeteringMiddleware:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = CLIENT_CLOSED
        # Routes write request.state into this dict; create it here so it is the one we read.
        state = scope.setdefault("state", {})

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                remaining: RateLimitStatus | None = state.get("ratelimit")
                if remaining is not None:
                    message["headers"] = [*message.get("headers", []), *remaining.headers()]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            status = 500 if status == CLIENT_CLOSED else status
            raise
        finally:
            who: Principal | None = state.get("principal")
            if who is not None:
                await self._account(scope, who, state.get("usage"), status, started)

    async def _account(
        self,
        scope: Scope,
        who: Principal,
        usage: RequestUsage | None,
        status: int,
        started: float,
    ) -> None:
        used = usage or RequestUsage()
        route = scope.get("route")
        self.services.usage.record(
            UsageRecord(
                created_at=datetime.now(UTC),
                project=who.project,
                key_id=who.key_id or None,
                key_prefix=who.prefix,
                model=used.model,
                version=used.version,
                route=getattr(route, "path", None) or scope["path"],
                input_tokens=used.input_tokens,
                output_tokens=used.output_tokens,
                items=used.items,
                audio_seconds=used.audio_seconds,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                status=status,
                request_id=request_id_var.get(),
            )
        )
        if used.tokens and status < 400:
            try:
                await self.services.limits.charge_tokens(who, used.tokens)
            except Exception:  # the response is already sent; never fail it afterwards
                log.exception("could not charge %d tokens to %s", used.tokens, who.actor)
