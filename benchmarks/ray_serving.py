"""Embedding serving through Ray Serve beside the embedded mode, in one run.

Two `openmaas serve` processes, one after the other, each fresh (catalog registered,
all-MiniLM-L6-v2 preloaded, authentication on):

- **embedded**: the model runs in the server process (no Ray address);
- **Ray Serve**: the server joins a two-node Ray cluster started on this machine
  (`tests/ray_cluster.py`) and serves the model through one replica of its Serve deployment
  (1 CPU, the same threads); the server stays the front door and calls the replica through a
  deployment handle.

Both take the load of `benchmarks/embeddings_serving.py` (its sentences, load generator and
statistics): one client sending one sentence per request, then 64 clients. Targets: the Ray
path keeps at least 85% of the embedded throughput at 64 clients, and adds at most 3 ms to
the p50 latency at one client. It prints the figures and a Markdown table (nothing written).

Usage (from the repository root)::

    .venv/bin/python benchmarks/ray_serving.py           # 200 single, 1024 concurrent
    .venv/bin/python benchmarks/ray_serving.py --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT)]  # `tests.ray_cluster` and `benchmarks.*` by package name

from tests.ray_cluster import ray_cluster  # noqa: E402

from benchmarks.embeddings_serving import (  # noqa: E402
    MODEL_NAME,
    THREADS,
    Measurement,
    make_requests,
    make_sentences,
    open_client,
    openmaas_server,
    run_load,
    run_scenario,
    running,
)
from openmaas.auth.keys import generate_key  # noqa: E402

TARGET_THROUGHPUT_SHARE = 0.85  # Ray at 64 clients over embedded at 64 clients
TARGET_EXTRA_P50_MS = 3.0  # Ray p50 at one client minus embedded p50 at one client
CONCURRENCY = 64
# One replica holding the whole node's CPU, with the embedded server's threads.
DEPLOYMENTS = {MODEL_NAME: {"min_replicas": 1, "max_replicas": 1, "num_cpus": 1}}


@dataclass(frozen=True, slots=True)
class Load:
    single: int  # requests at one client
    concurrent: int  # requests at 64 clients
    warmup: int


FULL = Load(single=200, concurrent=1024, warmup=256)
QUICK = Load(single=40, concurrent=256, warmup=128)


@dataclass(frozen=True, slots=True)
class Figures:
    name: str
    single: Measurement
    concurrent: Measurement


def measure(name: str, env_extra: dict[str, str], load: Load, workdir: Path) -> Figures:
    key = generate_key().plaintext
    command, env, port = openmaas_server(workdir / name, THREADS, key)
    warmup = make_sentences(load.warmup)
    single = make_sentences(load.single, load.warmup)
    concurrent = make_sentences(load.concurrent, load.warmup + load.single)
    with running(command, {**env, **env_extra}, port, workdir / f"{name}.log") as server:
        print(f"{name}: ready in {server.startup_s:.1f} s", flush=True)

        async def scenarios() -> Figures:
            async with open_client(server.url, CONCURRENCY, key) as client:
                await run_scenario(client, make_requests(warmup, 1), CONCURRENCY, server.pid)
                one = await run_scenario(client, make_requests(single, 1), 1, server.pid)
                many = await run_scenario(
                    client, make_requests(concurrent, 1), CONCURRENCY, server.pid
                )
            return Figures(name, one, many)

        figures = run_load(scenarios())
    for label, m in (("1 client", figures.single), (f"{CONCURRENCY} clients", figures.concurrent)):
        print(
            f"  {name:9} {label:11} {m.sentences_per_s:7.1f} sentences/s  "
            f"p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:7.2f} ms",
            flush=True,
        )
    return figures


def table(embedded: Figures, ray: Figures) -> str:
    rows = ["| mode | 1 client p50 (ms) | 1 client p99 (ms) | 64 clients (sentences/s) |"]
    rows.append("|---|---:|---:|---:|")
    for f in (embedded, ray):
        rows.append(
            f"| {f.name} | {f.single.p50_ms:.2f} | {f.single.p99_ms:.2f} | "
            f"{f.concurrent.sentences_per_s:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer requests")
    args = parser.parse_args()
    load = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="ray-serving-") as tmp:
        workdir = Path(tmp)
        embedded = measure("embedded", {}, load, workdir)
        with ray_cluster(head_cpus=1, worker_cpus=1) as cluster:
            ray = measure(
                "ray-serve",
                {
                    "OPENMAAS_RAY_ADDRESS": cluster.address,
                    "OPENMAAS_RAY_DEPLOYMENTS": json.dumps(DEPLOYMENTS),
                },
                load,
                workdir,
            )
    share = ray.concurrent.sentences_per_s / embedded.concurrent.sentences_per_s
    extra_ms = ray.single.p50_ms - embedded.single.p50_ms
    print()
    print(table(embedded, ray))
    print()
    verdict = "met" if share >= TARGET_THROUGHPUT_SHARE else "MISSED"
    print(f"64 clients: Ray keeps {share:.0%} of embedded (target >= 85%): {verdict}")
    verdict = "met" if extra_ms <= TARGET_EXTRA_P50_MS else "MISSED"
    print(f"1 client: Ray adds {extra_ms:+.2f} ms at p50 (target <= 3 ms): {verdict}")


if __name__ == "__main__":
    main()
