"""Traces and metrics of a real server, as a collector and Prometheus see them.

The server sends its spans to a real OTLP/HTTP receiver started here (`tests/otlp_receiver.py`,
decoding the protobuf with `opentelemetry-proto`): a request that carries a client's W3C
`traceparent` gives spans in that trace (server span, auth, resolve, queue wait, batch run,
response) linked parent to child, and a training job created by such a request continues its
trace in the worker process (job, load data, train epochs, register). A server without a
collector sends nothing. `/metrics`, scraped after real requests, counts their tokens, queue
waits and batch sizes by model, and has process metrics and the build's labels; every metric
the Grafana dashboard (deploy/grafana/openmaas.json) queries is there.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import openmaas
from openmaas import Client
from openmaas.protocol.registry import PathSource
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.integration.job_servers import JOB_WORKER_ENV, blocks, run_script
from tests.integration.waiting import wait_for
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.runtimes.tiny_models import build_bert, build_gpt2

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "openmaas.json"
EMBEDDER = "tiny-bert"
GENERATOR = "tiny-gpt2"
# Spans leave in batches this often (ms), instead of OpenTelemetry's default 5 s.
TRACING_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
REQUEST_SPANS = {
    "openmaas.auth",
    "openmaas.resolve",
    "openmaas.queue_wait",
    "openmaas.batch_run",
    "openmaas.response",
}
# A server with a worker starts in seconds; on a machine busy with other tests, in minutes.
STARTUP_TIMEOUT_S = 180.0
JOB_PHASES = {"openmaas.job.load_data", "openmaas.job.train_epochs", "openmaas.job.register"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("observability")
    running = start_server(
        root / "home",
        {
            **JOB_WORKER_ENV,
            **TRACING_ENV,
            "OPENMAAS_OTEL_ENDPOINT": receiver.url,
        },
        startup_timeout_s=STARTUP_TIMEOUT_S,
    )
    with Client(running.url, api_key=running.key) as admin:
        admin.upload(EMBEDDER, build_bert(root / "bert"), task="embedding")
        admin.register(GENERATOR, PathSource(path=str(build_gpt2(root / "gpt2"))))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def oai(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as client:
        yield client


def traceparent() -> tuple[str, str, str]:
    """A client's sampled W3C trace context: (header, trace id, the client's span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    text = httpx.get(f"{server.url}/metrics", headers=server.headers, timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans}


def ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[str]:
    """The ids of `span`'s parent, its parent's parent, ... as far as `spans` go."""
    by_id = {s.span_id: s for s in spans}
    found = []
    parent = by_id.get(span.parent_span_id)
    while parent is not None and parent.span_id not in found:
        found.append(parent.span_id)
        parent = by_id.get(parent.parent_span_id)
    return found


# -- traces ----------------------------------------------------------------------------------


def test_a_request_with_a_traceparent_gives_its_spans_in_the_clients_trace(
    server: RunningServer, receiver: OtlpReceiver, oai: openai.OpenAI
) -> None:
    header, trace_id, client_span = traceparent()
    served = oai.embeddings.create(
        model=EMBEDDER, input=["traces cross processes", "a second one"],
        extra_headers={"traceparent": header},
    )  # fmt: skip
    assert len(served.data) == 2

    expected = {"POST /v1/embeddings", *REQUEST_SPANS}
    spans = receiver.wait_for(lambda s: expected <= {x.name for x in s}, trace_id)
    named = by_name(spans)
    root = named["POST /v1/embeddings"]
    assert root.parent_span_id == client_span  # the client's span is the parent
    assert root.service == "openmaas-api"
    assert root.attributes["http.route"] == "/v1/embeddings"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["openmaas.model"] == EMBEDDER
    assert len(str(root.attributes["openmaas.request_id"])) == 32
    # Auth and the response's writing hang off the server span; resolve, queue wait and
    # batch run off the route's handler (FastAPI's own "fastapi.endpoint" span) under it.
    for name in ("openmaas.auth", "openmaas.response"):
        assert named[name].parent_span_id == root.span_id, name
    for name in REQUEST_SPANS:
        child = named[name]
        assert root.span_id in ancestors(child, spans), name
        assert root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns, name
    # In the order a request goes through them.
    assert named["openmaas.auth"].end_ns <= named["openmaas.resolve"].start_ns
    # (1 ms: each span is placed on the wall clock on its own)
    assert named["openmaas.queue_wait"].end_ns <= named["openmaas.batch_run"].start_ns + 10**6
    assert named["openmaas.batch_run"].end_ns <= named["openmaas.response"].start_ns
    assert named["openmaas.batch_run"].attributes["openmaas.batch.size"] >= 2
    assert named["openmaas.resolve"].attributes["openmaas.model"] == f"{EMBEDDER}:1"


def test_a_request_without_a_traceparent_starts_a_trace_of_its_own(
    server: RunningServer, receiver: OtlpReceiver
) -> None:
    response = httpx.post(
        f"{server.url}/v1/embeddings",
        headers={**server.headers, "x-request-id": "untraced-by-the-client"},
        json={"model": EMBEDDER, "input": "no trace context"},
        timeout=60,
    )
    assert response.status_code == 200

    def mine() -> ReceivedSpan | None:
        return next(
            (
                span
                for span in list(receiver.spans)
                if span.attributes.get("openmaas.request_id") == "untraced-by-the-client"
            ),
            None,
        )

    root = wait_for("the request's server span", mine, 30)
    assert root.parent_span_id == ""
    spans = receiver.wait_for(lambda s: {x.name for x in s} >= REQUEST_SPANS, root.trace_id)
    assert all(root.span_id in ancestors(s, spans) for s in spans if s.name in REQUEST_SPANS)


def test_a_refused_key_ends_the_trace_at_auth(
    server: RunningServer, receiver: OtlpReceiver
) -> None:
    header, trace_id, _ = traceparent()
    refused = httpx.post(
        f"{server.url}/v1/embeddings",
        headers={"Authorization": "Bearer om-nothing_" + "x" * 43, "traceparent": header},
        json={"model": EMBEDDER, "input": "x"},
        timeout=30,
    )
    assert refused.status_code == 401
    spans = receiver.wait_for(
        lambda s: {"openmaas.auth", "POST /v1/embeddings"} <= {x.name for x in s}, trace_id
    )
    named = by_name(spans)
    assert named["openmaas.auth"].attributes["openmaas.refused"] == refused.json()["error"]["code"]
    assert named["POST /v1/embeddings"].attributes["http.response.status_code"] == 401
    assert not {"openmaas.resolve", "openmaas.batch_run"} & set(named)


def test_a_training_job_continues_the_trace_of_the_request_that_created_it(
    server: RunningServer, receiver: OtlpReceiver, oai: openai.OpenAI
) -> None:
    words = {
        "positive": ["good", "great", "fine", "lovely"],
        "negative": ["bad", "awful", "dull", "poor"],
    }
    lines = [
        json.dumps({"text": f"a {words[label][i % 4]} film number {i}", "label": label})
        for i in range(48)
        for label in ("positive", "negative")
    ]
    uploaded = oai.files.create(file=("tiny.jsonl", "\n".join(lines).encode()), purpose="fine-tune")
    header, trace_id, client_span = traceparent()
    job = oai.fine_tuning.jobs.create(
        model="textcnn",
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 2, "batch_size": 16},
        extra_headers={"traceparent": header},
    )

    def done() -> openai.types.fine_tuning.FineTuningJob | None:
        current = oai.fine_tuning.jobs.retrieve(job.id)
        return current if current.status in ("succeeded", "failed", "cancelled") else None

    finished = wait_for(f"job {job.id}", done, 180)
    assert finished.status == "succeeded", finished.error

    expected = {"POST /v1/fine_tuning/jobs", "openmaas.job", *JOB_PHASES}
    spans = receiver.wait_for(lambda s: expected <= {x.name for x in s}, trace_id, timeout_s=30)
    named = by_name(spans)
    created = named["POST /v1/fine_tuning/jobs"]
    assert created.parent_span_id == client_span
    run = named["openmaas.job"]
    assert created.span_id in ancestors(run, spans)  # queued by that request's handler
    assert (run.service, created.service) == ("openmaas-worker", "openmaas-api")
    assert run.attributes["openmaas.job.id"] == job.id
    assert run.attributes["openmaas.job.kind"] == "training"
    for phase in JOB_PHASES:
        assert named[phase].parent_span_id == run.span_id, phase
        assert run.start_ns <= named[phase].start_ns <= named[phase].end_ns <= run.end_ns
    order = [
        named[p]
        for p in ("openmaas.job.load_data", "openmaas.job.train_epochs", "openmaas.job.register")
    ]
    assert order[0].end_ns <= order[1].start_ns
    assert order[1].end_ns <= order[2].start_ns
    # Each epoch's figures are events on the training span.
    assert len([e for e in named["openmaas.job.train_epochs"].events if e.startswith("step ")]) >= 2


def test_a_server_without_a_collector_sends_nothing(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> None:
    """No OPENMAAS_OTEL_* or OTEL_EXPORTER_OTLP_* endpoint: no spans, not even to the
    OTLP default (127.0.0.1:4318), where a receiver listens if the port is free."""
    env = {name: None for name in os.environ if name.startswith(("OTEL_", "OPENMAAS_OTEL"))}
    try:
        default = OtlpReceiver(port=4318)
    except OSError:
        pytest.skip("port 4318 (the OTLP default) is taken on this machine")
    with default:
        quiet = start_server(
            tmp_path_factory.mktemp("untraced") / "home",
            {**env, **TRACING_ENV},
            startup_timeout_s=STARTUP_TIMEOUT_S,
        )
        try:
            header, trace_id, _ = traceparent()
            for _ in range(3):
                answer = httpx.get(
                    f"{quiet.url}/v1/models", headers={**quiet.headers, "traceparent": header}
                )
                assert answer.status_code == 200
            # What a traced server sends within its 100 ms batch delay, this one never does.
            with pytest.raises(AssertionError, match="only"):
                default.wait_for(lambda s: bool(s), trace_id, timeout_s=1.5)
            assert default.requests == 0
            assert not default.spans
        finally:
            stop_server(quiet)
    assert receiver.trace(trace_id) == []


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_count_tokens_queue_waits_and_batch_sizes_per_model(
    server: RunningServer, oai: openai.OpenAI
) -> None:
    oai.embeddings.create(model=EMBEDDER, input="warm the model up")
    before = scrape(server)
    texts = ["one sentence", "another, somewhat longer sentence to embed", "three"]
    embedded = oai.embeddings.create(model=EMBEDDER, input=texts)
    completion = oai.completions.create(model=GENERATOR, prompt="Once upon a time", max_tokens=5)
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("openmaas_input_tokens_total", model=EMBEDDER) == embedded.usage.prompt_tokens > 0
    assert completion.usage is not None
    assert (
        moved("openmaas_prompt_tokens_total", model=GENERATOR) == completion.usage.prompt_tokens > 0
    )
    assert (
        moved("openmaas_completion_tokens_total", model=GENERATOR)
        == completion.usage.completion_tokens
        > 0
    )
    assert moved("openmaas_input_tokens_total", model=GENERATOR) == 0
    assert moved("openmaas_prompt_tokens_total", model=EMBEDDER) == 0
    # The three texts waited in the queue once each and ran in batches totalling three.
    assert moved("openmaas_queue_wait_seconds_count", model=EMBEDDER) == 3
    assert moved("openmaas_batch_size_sum", model=EMBEDDER) == 3
    assert 1 <= moved("openmaas_batch_size_count", model=EMBEDDER) <= 3
    assert moved("openmaas_batch_size_bucket", model=EMBEDDER, le="+Inf") >= 1


def test_metrics_have_process_metrics_and_the_build(server: RunningServer, tmp_path: Path) -> None:
    samples = scrape(server)
    names = {name for name, _ in samples}
    assert value(samples, "process_resident_memory_bytes") > 10 * 1024 * 1024
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_start_time_seconds") > 1.6e9
    assert {"process_open_fds", "python_info", "python_gc_collections_total"} <= names
    (build,) = [dict(labels) for name, labels in samples if name == "openmaas_build_info"]
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert build == {
        "version": openmaas.__version__,
        "git_sha": commit,
        "python": platform.python_version(),
        "torch": metadata.version("torch"),
    }
    # The docs' example, as written.
    example = blocks((ROOT / "docs" / "observability.md").read_text(), "bash")[0]
    ran = run_script(server, example, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert f'git_sha="{commit}"' in ran.stdout


def test_every_metric_the_grafana_dashboard_queries_is_on_metrics(
    server: RunningServer, oai: openai.OpenAI
) -> None:
    for _ in range(2):  # a cache miss, then a hit
        oai.embeddings.create(model=EMBEDDER, input="so every series has a sample")
    oai.completions.create(model=GENERATOR, prompt="Hello", max_tokens=2)
    exported = {name for name, _ in scrape(server)}
    queried = dashboard_metric_names(json.loads(DASHBOARD.read_text()))
    assert len(queried) >= 10
    assert sorted(queried - exported) == []


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and",
    "or", "unless", "inf", "nan",
}  # fmt: skip


def dashboard_metric_names(dashboard: dict[str, object]) -> set[str]:
    """The metric names the dashboard's PromQL expressions read (functions, label matchers,
    grouping labels, ranges and keywords left out)."""
    names: set[str] = set()
    for expr in _exprs(dashboard):
        # A variable's `label_values(metric, label)`: the metric.
        expr = re.sub(r"label_values\(\s*([\w:]+)\s*,[^)]*\)", r"\1", expr)
        expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
        expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
        expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
        expr = re.sub(r"\$\w+", "", expr)  # dashboard variables ($__rate_interval)
        for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
            word = match.group(0)
            after = expr[match.end() :].lstrip()
            if after.startswith("(") or word.lower() in PROMQL_WORDS:
                continue
            names.add(word)
    return names


def _exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            if key in ("expr", "definition") and isinstance(item, str):
                yield item
            else:
                yield from _exprs(item)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)
