"""The request's server span: a trace per request (or the client's, from its `traceparent`),
with the response's writing as a child span. Installed only when tracing is configured.

The server span is named after the route template (`POST /v1/embeddings`) and carries the
request id and the model; the spans of the work in between (auth, resolve, queue wait,
batch run) are started by that work, under it (`observability.tracing.child_span`).

Example::

    if settings.traces_endpoint is not None:
        app.add_middleware(TracingMiddleware)
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.observability.tracing import extract_context, tracer

PROPAGATED = (b"traceparent", b"tracestate", b"baggage")


class TracingMiddleware:
    """Puts the request id and the model on the request's server span, and times the
    response's writing under it. FastAPI's own OpenTelemetry support makes the server span
    (from the client's `traceparent`, named after the route) once a tracer provider is
    configured; where it made none (a FastAPI without it), this middleware makes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        server = trace.get_current_span()
        owned: Span | None = None
        token = None
        if not server.is_recording():
            carrier = {
                key.decode("latin-1"): value.decode("latin-1")
                for key, value in scope["headers"]
                if key in PROPAGATED
            }
            server = owned = tracer.start_span(
                method,
                context=extract_context(carrier),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
            )
            token = otel_context.attach(trace.set_span_in_context(owned))
        writing: Span | None = None
        status = 0

        async def send_traced(message: Message) -> None:
            nonlocal writing, status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Now: FastAPI ends its server span as the response's last chunk goes out.
                _annotate(server, scope)
                writing = tracer.start_span(
                    "openmaas.response",
                    context=trace.set_span_in_context(server),
                    attributes={"http.response.status_code": status},
                )
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                _end(writing)
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            if owned is not None:
                owned.record_exception(exc)
                owned.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            _end(writing)
            if owned is not None:
                _finish(owned, scope, status)
            if token is not None:
                otel_context.detach(token)


def _end(span: Span | None) -> None:
    if span is not None and span.is_recording():
        span.end()


def _annotate(span: Span, scope: Scope) -> None:
    route = getattr(scope.get("route"), "path", None)
    if route:
        # A request refused before routing (auth) is named by the route it asked for, as
        # its metrics are labelled.
        span.update_name(f"{scope['method']} {route}")
        span.set_attribute("http.route", route)
    state: dict[str, Any] = scope.get("state", {})
    if state.get("request_id"):
        span.set_attribute("openmaas.request_id", str(state["request_id"]))
    if state.get("model"):
        span.set_attribute("openmaas.model", str(state["model"]))


def _finish(span: Span, scope: Scope, status: int) -> None:
    _annotate(span, scope)
    if status:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()
