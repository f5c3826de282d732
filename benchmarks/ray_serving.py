"""Embedding serving through Ray Serve beside the embedded mode, in one run.

Three `openmaas serve` processes, one after the other, each fresh (catalog registered,
all-MiniLM-L6-v2 preloaded, authentication on):

- **embedded**: the model runs in the server process (no Ray address);
- **Ray Serve**: the server joins a two-node Ray cluster started on this machine
  (`tests/ray_cluster.py`) and serves the model through one replica of its Serve deployment
  (1 CPU, the same threads); the server stays the front door and calls the replica through a
  deployment handle, coalescing requests as shipped (`scaleout/serve_coalesce.py`);
- **Ray Serve, a call per request**: the same with `"coalesce": false`, to show what
  coalescing buys.

Both take the load of `benchmarks/embeddings_serving.py` (its sentences, load generator and
statistics): one client sending one sentence per request, then 64 clients. Targets: the Ray
path keeps at least 85% of the embedded throughput at 64 clients, and adds at most 3 ms to
the p50 latency at one client. Each round measures every mode (each server fresh, the
cluster started for a Ray mode only), the order rotating; the targets are judged on the medians
of the per-round figures. It prints the figures and rewrites the "Serving through Ray Serve"
section of `docs/benchmarks.md`.

Usage (from the repository root)::

    .venv/bin/python benchmarks/ray_serving.py           # 3 rounds of 200 single, 1024 concurrent
    .venv/bin/python benchmarks/ray_serving.py --quick   # a smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from benchmarks.markdown_sections import (  # noqa: E402
    add_run_arguments,
    chosen_rounds,
    describe_environment,
    publish,
)
from openmaas.auth.keys import generate_key  # noqa: E402

HEADING = "## Serving through Ray Serve"
TARGET_THROUGHPUT_SHARE = 0.85  # Ray at 64 clients over embedded at 64 clients
TARGET_EXTRA_P50_MS = 3.0  # Ray p50 at one client minus embedded p50 at one client
CONCURRENCY = 64
# One replica holding the whole node's CPU, with the embedded server's threads.
DEPLOYMENTS = {MODEL_NAME: {"min_replicas": 1, "max_replicas": 1, "num_cpus": 1}}
# The Ray modes: as shipped (calls coalesced), and one Ray call per request, for comparison.
RAY_MODES = {"ray-serve": True, "ray-serve-uncoalesced": False}


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
    env["OPENMAAS_AUTO_ONNX"] = "false"  # both modes on the same engine (see the notes)
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


def ray_mode(name: str, load: Load, workdir: Path) -> Figures:
    coalesce = RAY_MODES[name]
    deployments = {model: {**entry, "coalesce": coalesce} for model, entry in DEPLOYMENTS.items()}
    with ray_cluster(head_cpus=1, worker_cpus=1) as cluster:
        return measure(
            name,
            {
                "OPENMAAS_RAY_ADDRESS": cluster.address,
                "OPENMAAS_RAY_DEPLOYMENTS": json.dumps(deployments),
            },
            load,
            workdir,
        )


@dataclass(frozen=True, slots=True)
class Results:
    embedded: list[Figures]
    ray: list[Figures]
    seconds: float
    measured_at: datetime
    uncoalesced: list[Figures] = field(default_factory=list)  # one Ray call per request

    def shares(self) -> list[float]:
        """Per round: Ray's throughput at 64 clients over the embedded mode's."""
        return [
            r.concurrent.sentences_per_s / e.concurrent.sentences_per_s
            for e, r in zip(self.embedded, self.ray, strict=True)
        ]

    def extra_ms(self) -> list[float]:
        """Per round: Ray's p50 at one client minus the embedded mode's."""
        return [
            r.single.p50_ms - e.single.p50_ms for e, r in zip(self.embedded, self.ray, strict=True)
        ]


def run(load: Load, rounds: int, workdir: Path) -> Results:
    """Every mode in every round, each server fresh; the order rotates between rounds."""
    started = time.perf_counter()
    figures: dict[str, list[Figures]] = {"embedded": [], **{name: [] for name in RAY_MODES}}
    names = list(figures)
    for index in range(rounds):
        here = workdir / f"round-{index + 1}"
        here.mkdir()
        shift = index % len(names)
        for mode in names[shift:] + names[:shift]:
            print(f"round {index + 1}: {mode}", flush=True)
            if mode == "embedded":
                figures[mode].append(measure("embedded", {}, load, here))
            else:
                figures[mode].append(ray_mode(mode, load, here))
    return Results(
        figures["embedded"],
        figures["ray-serve"],
        time.perf_counter() - started,
        datetime.now(UTC),
        figures["ray-serve-uncoalesced"],
    )


def render_section(results: Results, load: Load) -> str:
    share = statistics.median(results.shares())
    extra = statistics.median(results.extra_ms())

    def med(figures: list[Figures], pick: Callable[[Figures], float]) -> float:
        return statistics.median(pick(f) for f in figures)

    rows = [
        "| mode | 1 client p50 (ms) | 1 client p99 (ms) | 64 clients (sentences/s) "
        "| 64 clients p50 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    modes = [("embedded", results.embedded), ("Ray Serve", results.ray)]
    if results.uncoalesced:
        modes.append(("Ray Serve, a call per request", results.uncoalesced))
    for name, figures in modes:
        rows.append(
            f"| {name} | {med(figures, lambda f: f.single.p50_ms):.2f} | "
            f"{med(figures, lambda f: f.single.p99_ms):.2f} | "
            f"{med(figures, lambda f: f.concurrent.sentences_per_s):.0f} | "
            f"{med(figures, lambda f: f.concurrent.p50_ms):.0f} |"
        )
    met = "**met**"
    lines = [
        HEADING,
        "",
        f"Measured {results.measured_at:%Y-%m-%d %H:%M} UTC with "
        f"`python benchmarks/ray_serving.py` ({results.seconds / 60:.1f} minutes) on "
        + describe_environment(("torch", "transformers", "ray", "fastapi"), THREADS)
        + ".",
        "",
        "`POST /v1/embeddings` with all-MiniLM-L6-v2 (PyTorch, one sentence per request) from a "
        "fresh `openmaas serve` in two modes: **embedded** (the model in the server process) "
        "and **Ray Serve** (the server joins a two-node Ray cluster started on this machine, "
        "one CPU a node, and calls the model's one replica, 1 CPU, through a deployment "
        "handle, coalescing the requests that arrive while two calls are out into one call, "
        'as shipped; the third row sends one call per request, `"coalesce": false`). '
        f"Medians over {len(results.embedded)} rounds:",
        "",
        *rows,
        "",
        "Targets of issue 15, each the median of its per-round figures:",
        "",
        f"- at 64 clients the Ray path keeps >= 85% of the embedded throughput: {share:.0%} "
        + (met if share >= TARGET_THROUGHPUT_SHARE else "**not met**")
        + " (per round: "
        + ", ".join(f"{v:.0%}" for v in results.shares())
        + ");",
        f"- at one client it adds <= 3 ms to the p50 latency: {extra:+.2f} ms "
        + (met if extra <= TARGET_EXTRA_P50_MS else "**not met**")
        + " (per round: "
        + ", ".join(f"{v:+.2f}" for v in results.extra_ms())
        + ").",
        "",
        "How it is measured:",
        "",
        f"- Both servers: `OPENMAAS_PRELOAD=all-minilm-l6-v2`, `OPENMAAS_THREADS={THREADS}`, "
        "an admin key on every request, `OPENMAAS_AUTO_ONNX=false` (both modes run the same "
        "PyTorch engine; the ONNX variant would finish building at a different moment in each), "
        "every other setting as shipped.",
        f"- Load: {load.warmup} warm-up requests at 64 clients, then {load.single} requests "
        f"from one client and {load.concurrent} from 64 clients, each sending its next request "
        "when its last returns; no sentence repeats within a server (its response cache never "
        "hits). "
        "The load generator is `benchmarks/http_load.py` (the one of "
        "`benchmarks/embeddings_serving.py`) on the same machine.",
        "- Each round starts both servers fresh, one after the other, the Ray cluster only "
        "for a Ray mode (its processes are part of what that mode costs); the order of the "
        "modes rotates between rounds. The targets compare the shipped Ray mode.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    args = parser.parse_args()
    rounds = chosen_rounds(parser, args)
    load = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="ray-serving-") as tmp:
        results = run(load, rounds, Path(tmp))
    publish(render_section(results, load), args)


if __name__ == "__main__":
    main()
