"""Per-request metering: a usage record for every authenticated request, tokens reserved
and settled, and the caller's remaining per-minute limits as `x-ratelimit-*` headers.

Before serving, a route reserves an upper bound of the tokens the request may use with
`reserve_tokens(request, bound)` (429 when it does not fit the caller's token limits; `bound`
is computed only for a caller with limits); it says what the request consumed with
`meter(request, ...)`. The middleware settles the reservation with those tokens (or charges
them, where nothing was reserved) just before the response's last body chunk goes out, so a
client that has read a whole response sees it settled in its next request; then it hands
one `UsageRecord` to the buffered recorder.

Example::

    await reserve_tokens(request, lambda: engine.token_bound(EMBEDDING, texts, params))
    served = await engine.infer(EMBEDDING, model, texts, params, caller=who)
    meter(request, served.version, input_tokens=served.prompt_tokens, items=len(texts))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.auth.entities import Principal
from openmaas.auth.ratelimit import RateLimitStatus, TokenReservation
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
    generation: bool = False  # text generation: the input tokens are a prompt

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
    generation: bool = False,
) -> None:
    """Record what this request consumed (call again to update, e.g. at a stream's end);
    `generation`: a text generation, whose input tokens are its prompt."""
    request.state.usage = RequestUsage(
        model=version.model if version else "",
        version=version.version if version else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        items=items,
        audio_seconds=audio_seconds,
        generation=generation,
    )


async def reserve_tokens(request: Request, bound: Callable[[], int]) -> None:
    """Hold `bound()`, an upper bound of what this request may use, against the caller's
    token limits until the response is settled: RateLimited or QuotaExhausted (429) when it
    does not fit. Call once, after the body is parsed and before any work is done. The bound
    is computed only for a caller with limits: for the others it would be work on every
    request's hot path for nothing (the engine still refuses a max_tokens over the cap)."""
    who: Principal = request.state.principal
    services: Services = request.app.state.services
    if services.limits.policies(who) is None:
        return
    held = await services.limits.reserve_tokens(who, bound())
    if held is not None:
        request.state.reservation = held


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
                    # A refusal's own x-ratelimit-* (a reservation that did not fit) win.
                    headers = list(message.get("headers", []))
                    present = {name.lower() for name, _ in headers}
                    extra = [(n, v) for n, v in remaining.headers() if n not in present]
                    message["headers"] = [*headers, *extra]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # The usage is final (a stream's generator has finished): settle first.
                await self._settle(state, status)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            status = 500 if status == CLIENT_CLOSED else status
            raise
        finally:
            who: Principal | None = state.get("principal")
            if who is not None:
                await self._settle(state, status)  # no last chunk was sent: an error, a cut
                await self._account(scope, who, state.get("usage"), status, started)

    async def _settle(self, state: dict[str, object], status: int) -> None:
        """Replace the request's reservation with the tokens it used (once per request);
        tokens of a request that reserved nothing are charged. A failed request is charged
        nothing, as before reservations."""
        who = state.get("principal")
        if not isinstance(who, Principal) or state.get("settled"):
            return
        state["settled"] = True
        usage = state.get("usage")
        used = usage.tokens if isinstance(usage, RequestUsage) and status < 400 else 0
        held = state.get("reservation")
        try:
            if isinstance(held, TokenReservation):
                await held.settle(used)
            elif used:
                await self.services.limits.charge_tokens(who, used)
        except Exception:  # the response is under way; never fail it for its accounting
            log.exception("could not charge %d tokens to %s", used, who.actor)

    async def _account(
        self,
        scope: Scope,
        who: Principal,
        usage: RequestUsage | None,
        status: int,
        started: float,
    ) -> None:
        used = usage or RequestUsage()
        if used.model and status < 400:  # what was charged (see `_settle`)
            self.services.metrics.count_tokens(
                used.model, used.input_tokens, used.output_tokens, generation=used.generation
            )
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
