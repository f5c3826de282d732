"""Tracing's helpers, in-process: off by default (no provider installed, no middleware, the
shared no-op span), and the W3C context that crosses processes (`inject_context` /
`extract_context`, what a job row and the Ray helpers carry). The spans a real server and
its workers send are checked against a real receiver in tests/integration/test_observability.py.

No test here installs a global tracer provider: that can be done once per process, and it
would turn tracing on for every other test the process runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN

from openmaas.api.app import build_app
from openmaas.api.tracing import TracingMiddleware
from openmaas.observability.tracing import (
    attached_context,
    child_span,
    configure_tracing,
    extract_context,
    inject_context,
)
from openmaas.settings import Settings

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(home=tmp_path / "home", catalog_autoregister=False, **values)  # type: ignore[arg-type]


def test_without_a_collector_nothing_is_installed(tmp_path: Path) -> None:
    quiet = settings(tmp_path)
    assert quiet.traces_endpoint is None
    assert configure_tracing(quiet, service="openmaas-api") is None
    # Still OpenTelemetry's proxy: no SDK provider, so FastAPI's own telemetry stays off too.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    app = build_app(quiet)
    assert TracingMiddleware not in [m.cls for m in app.user_middleware]
    with child_span("openmaas.resolve") as span:
        assert span is INVALID_SPAN  # the shared no-op: nothing was started
    assert inject_context() == {}


def test_a_collector_turns_the_request_middleware_on(tmp_path: Path) -> None:
    traced = settings(tmp_path, otel_endpoint="http://collector:4318/")
    assert traced.traces_endpoint == "http://collector:4318/v1/traces"
    full = settings(tmp_path, otel_traces_endpoint="http://collector:4318/spans")
    assert full.traces_endpoint == "http://collector:4318/spans"
    app = build_app(traced)
    assert TracingMiddleware in [m.cls for m in app.user_middleware]


def test_the_standard_variables_name_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://standard:4318")
    assert settings(tmp_path).traces_endpoint == "http://standard:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://standard:4318/traces")
    assert settings(tmp_path).traces_endpoint == "http://standard:4318/traces"
    monkeypatch.setenv("OPENMAAS_OTEL_ENDPOINT", "http://ours:4318")
    assert settings(tmp_path).otel_endpoint == "http://ours:4318"  # ours wins


def test_the_context_crosses_processes_as_w3c_headers() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    # What a client sent becomes the parent of what this process starts.
    with tracer.start_as_current_span(
        "request", context=extract_context({"traceparent": TRACEPARENT})
    ) as request:
        assert format(request.get_span_context().trace_id, "032x") == TRACEPARENT[3:35]
        carrier = inject_context()
    own_span = format(request.get_span_context().span_id, "016x")
    assert carrier["traceparent"] == f"00-{TRACEPARENT[3:35]}-{own_span}-01"

    # Another process (a job worker, a Ray replica) continues it.
    with attached_context(carrier), tracer.start_as_current_span("job") as job:
        assert trace.get_current_span() is job
    (recorded_job,) = [s for s in exporter.get_finished_spans() if s.name == "job"]
    assert recorded_job.parent is not None
    assert recorded_job.parent.span_id == request.get_span_context().span_id
    assert recorded_job.context.trace_id == request.get_span_context().trace_id
    assert job.get_span_context().trace_id == request.get_span_context().trace_id
    # Nothing to continue: an empty or malformed carrier starts a new trace.
    for carrier in ({}, {"traceparent": "nonsense"}, None):
        parent = trace.get_current_span(extract_context(carrier))
        assert not parent.get_span_context().is_valid
