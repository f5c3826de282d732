"""OpenTelemetry spans, off by default: exported over OTLP/HTTP only when a collector is named.

Each process that wants its spans exported calls `configure_tracing` once at start (the
server, a job worker; a Ray replica or worker the same way), as it configures its logging.
Until then, and when no collector is named, `tracer` is OpenTelemetry's no-op tracer and
`child_span` does not even call it: a span is started only under a span that records.

Trace context crosses processes as W3C `traceparent` (and `tracestate`): clients send it as
HTTP headers, a job carries it in its row (`inject_context` when queued, `extract_context`
in the worker), and a Ray replica or worker gets it the same way in its call's arguments.

Example::

    handle = configure_tracing(settings, service="openmaas-api")  # None: tracing is off
    with child_span("openmaas.resolve", {"openmaas.model": "bert"}):
        ...
    carrier = inject_context()  # {"traceparent": "00-…"} or {} when nothing is traced
    with continued_span("openmaas.job", carrier):
        ...
    if handle is not None:
        handle.shutdown()  # sends what is still buffered
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from openmaas.settings import Settings

TRACER_NAME = "openmaas"
# The job row's option that carries the trace context of the request that queued it.
TRACE_CONTEXT_OPTION = "trace_context"

# OpenTelemetry's proxy: no-op until a provider is configured in this process.
tracer = trace.get_tracer(TRACER_NAME)

_NO_SPAN: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)
_installed: TracingHandle | None = None  # what `export_spans` set up in this process


@dataclass(frozen=True, slots=True)
class TracingHandle:
    """The provider `configure_tracing` installed, to flush and stop at exit."""

    provider: TracerProvider
    endpoint: str

    def force_flush(self, timeout_ms: int = 5_000) -> bool:
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


def configure_tracing(settings: Settings, *, service: str) -> TracingHandle | None:
    """Export this process's spans to the settings' collector (OTLP over HTTP, protobuf),
    batched; None, and nothing installed, when the settings name none. The service name
    is `service` unless OTEL_SERVICE_NAME says otherwise."""
    endpoint = settings.traces_endpoint
    return None if endpoint is None else export_spans(endpoint, service=service)


def export_spans(endpoint: str, *, service: str) -> TracingHandle:
    """`configure_tracing` for a process that has no settings of its own (a Ray Train
    worker), given the collector its driver exports to (`exporting_to`). Once a process:
    a second call for the same collector gives the first call's handle."""
    global _installed
    if _installed is not None and _installed.endpoint == endpoint:
        return _installed
    # Imported here: a process without a collector never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from openmaas.observability.build import package_version

    # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (read by `create`) win over our name.
    resource = Resource.create({SERVICE_VERSION: package_version()})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _installed = TracingHandle(provider, endpoint)
    return _installed


def exporting_to() -> str | None:
    """The collector this process exports its spans to; None when it exports none."""
    return None if _installed is None else _installed.endpoint


def recording() -> bool:
    """Whether the current span records: only then are child spans worth starting."""
    return trace.get_current_span().is_recording()


def child_span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Span]:
    """A span under the current one, made current; a shared no-op when nothing records (no
    collector, or a trace the sampler dropped), so hot paths pay one context lookup."""
    if not trace.get_current_span().is_recording():
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes)


def inject_context() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`): what to hand
    to another process (a job's row, a Ray replica's or worker's call). Empty when nothing is
    traced."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context `inject_context` gave (or a client's headers): the parent of the
    spans this process starts for that work. An empty or malformed carrier gives an empty
    context (a new trace)."""
    return propagate.extract(dict(carrier or {}))


@contextmanager
def attached_context(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the carried context current for the block (a Ray replica handling a call): the
    spans started inside continue the caller's trace."""
    token = otel_context.attach(extract_context(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def continued_span(
    name: str,
    carrier: Mapping[str, str] | None,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A span continuing the trace in `carrier` (a new trace without one), made current; an
    exception fails it. No-op when this process exports no spans."""
    with tracer.start_as_current_span(
        name, context=extract_context(carrier), kind=kind, attributes=attributes
    ) as span:
        yield span


@contextmanager
def remote_span(
    name: str,
    endpoint: str | None,
    carrier: Mapping[str, str] | None,
    attributes: Mapping[str, Any],
    *,
    service: str,
) -> Iterator[Span]:
    """A span in a Ray worker (a training rank, a search trial) continuing the trace its
    driver carried over, exported to the driver's collector and flushed at the end, since
    the worker may end with its work; a no-op when the driver traces nothing."""
    if endpoint is None or not carrier:
        yield INVALID_SPAN
        return
    handle = export_spans(endpoint, service=service)
    try:
        with continued_span(name, carrier, attributes) as span:
            yield span
    finally:
        handle.force_flush()


def record_span(
    name: str,
    started_s: float,
    finished_s: float,
    attributes: Mapping[str, Any] | None = None,
    *,
    error: BaseException | None = None,
) -> None:
    """A span that already happened, under the current one: `started_s` and `finished_s` are
    `time.perf_counter()` readings (the batcher's clock), placed on the wall clock now."""
    offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)
    span = tracer.start_span(
        name, attributes=attributes, start_time=offset_ns + int(started_s * 1e9)
    )
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end(end_time=offset_ns + int(finished_s * 1e9))


def mark_failed(error: BaseException, code: str | None = None) -> None:
    """Fail the current span for an error that is handled where it happened (a job's failure
    is recorded on the job, not raised)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, code or type(error).__name__))


def add_span_event(name: str, attributes: Mapping[str, Any]) -> None:
    """An event (a training step's figures) on the current span, when it records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, dict(attributes))
