"""Where one client's latency goes through Ray Serve, beside the embedded mode: the spans of
each request, as a collector receives them.

`benchmarks/ray_serving.py` finds the Ray path adds about 8 ms to one client's p50. This
script says where: it runs the two modes of that benchmark (fresh servers, the same model,
PyTorch engine, the same two-node cluster), each exporting spans to an OTLP receiver on a
loopback port (`tests/otlp_receiver.py`), sends sentences one at a time with a W3C
`traceparent`, and takes the medians over the requests of:

- **client**: the request as the client timed it;
- **server**: the API process's request span (FastAPI's server span);
- **queue wait** and **batch run**: the engine's spans (in the replica, for Ray);
- **replica call**: the replica's `openmaas.replica.infer` span (Ray only), and the **hop**:
  the API process's span around the call minus the replica's span, which is what the call
  costs outside the replica's own work (the router, gRPC both ways, Serve's wrapper).

Tracing costs both modes the same work per request. It prints a table; it writes nothing.

Usage (from the repository root)::

    .venv/bin/python benchmarks/ray_latency.py            # 200 requests a mode
    .venv/bin/python benchmarks/ray_latency.py --requests 50
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT)]

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan  # noqa: E402
from tests.ray_cluster import ray_cluster  # noqa: E402

from benchmarks.embeddings_serving import (  # noqa: E402
    MODEL_NAME,
    THREADS,
    make_sentences,
    openmaas_server,
    running,
)
from benchmarks.ray_serving import DEPLOYMENTS  # noqa: E402
from openmaas.auth.keys import generate_key  # noqa: E402

WARMUP = 30
REPLICA_SERVICE = "openmaas-replica"


def _ms(span: ReceivedSpan) -> float:
    return (span.end_ns - span.start_ns) / 1e6


def decompose(spans: list[ReceivedSpan], client_span: str) -> dict[str, float]:
    """One request's figures (ms) from its trace's spans."""
    by_id = {span.span_id: span for span in spans}
    figures: dict[str, float] = {}
    roots = [span for span in spans if span.parent_span_id == client_span]
    if roots:
        figures["server"] = max(_ms(span) for span in roots)
    for span in spans:
        if span.name == "openmaas.queue_wait":
            figures["queue wait"] = _ms(span)
        elif span.name == "openmaas.batch_run":
            figures["batch run"] = _ms(span)
        elif span.name == "openmaas.replica.infer":
            figures["replica call"] = _ms(span)
            caller = by_id.get(span.parent_span_id)
            if caller is not None:
                figures["hop"] = _ms(caller) - _ms(span)
                figures[f"around the call ({caller.name})"] = _ms(caller)
    return figures


def measure(
    name: str, env_extra: dict[str, str], requests: int, workdir: Path
) -> dict[str, list[float]]:
    key = generate_key().plaintext
    command, env, port = openmaas_server(workdir / name, THREADS, key)
    env["OPENMAAS_AUTO_ONNX"] = "false"
    sentences = make_sentences(WARMUP + requests)
    collected: dict[str, list[float]] = defaultdict(list)
    with OtlpReceiver() as receiver:
        env["OPENMAAS_OTEL_ENDPOINT"] = receiver.url
        with running(command, {**env, **env_extra}, port, workdir / f"{name}.log") as server:
            headers = {"Authorization": f"Bearer {key}"}
            traces: list[tuple[str, str]] = []
            with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
                for index, sentence in enumerate(sentences):
                    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
                    started = time.perf_counter()
                    response = client.post(
                        "/v1/embeddings",
                        json={"model": MODEL_NAME, "input": [sentence]},
                        headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
                    )
                    elapsed = (time.perf_counter() - started) * 1e3
                    response.raise_for_status()
                    if index >= WARMUP:
                        collected["client"].append(elapsed)
                        traces.append((trace_id, span_id))
            time.sleep(6)  # the batch span processors export every few seconds
            for trace_id, span_id in traces:
                for label, value in decompose(receiver.trace(trace_id), span_id).items():
                    collected[label].append(value)
    return collected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="ray-latency-") as tmp:
        root = Path(tmp)
        results["embedded"] = measure("embedded", {}, args.requests, root)
        with ray_cluster(head_cpus=1, worker_cpus=1) as cluster:
            results["ray-serve"] = measure(
                "ray-serve",
                {
                    "OPENMAAS_RAY_ADDRESS": cluster.address,
                    "OPENMAAS_RAY_DEPLOYMENTS": json.dumps(DEPLOYMENTS),
                },
                args.requests,
                root,
            )
    labels = list(dict.fromkeys(label for figures in results.values() for label in figures))
    print(f"\nmedian ms over {args.requests} requests, one client")
    print(f"{'':40}" + "".join(f"{mode:>12}" for mode in results))
    for label in labels:
        cells = []
        for figures in results.values():
            values = figures.get(label)
            cells.append(f"{statistics.median(values):12.2f}" if values else f"{'':>12}")
        print(f"{label:40}" + "".join(cells))


if __name__ == "__main__":
    main()
