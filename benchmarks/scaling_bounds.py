"""Scaling bounds: what the shared services absorb, through OpenMaaS's own code paths.

Measures, on the PostgreSQL, Redis and S3 API server this machine runs:

- **usage rows/s** PostgreSQL takes through `UsageRecorder` (its batches, its COPY), from
  1 and from N recorder processes at once (N API processes), and **audit events/s**
  through `AuditLog.record` (one transaction each);
- **rate-limit operations/s** through `RateLimiter` on Redis with every per-minute, day and
  month limit set on the project and the key (the costliest policy), per request:
  `check_request`, `reserve_tokens`, `settle`, from 1 and N processes; the Redis commands
  each request costs and the latency of one `check_request`;
- **store reads per request** of the cached paths every request takes, counted with a
  SQLAlchemy event: `Authenticator` (`auth_cache_ttl_s` 1 s) and `ModelRouter`
  (`OPENMAAS_RESOLVE_TTL_S` 2 s), for a burst of concurrent requests and for a steady
  stream of requests over a few seconds;
- **object storage**: a ~90 MB version registered through `S3ArtifactStore` (the upload),
  then opened by a second registry with an empty cache (cold: download and hash check)
  and again (warm: one LIST, ETags compared, hash check), on moto's standalone S3 server.

Scratch state only: a fresh PostgreSQL database (dropped at the end), a Redis namespace of
its own (its keys deleted), a temporary directory. It prints the figures and rewrites the
"Scaling bounds" section of `docs/benchmarks.md`; the estimate in `docs/scaling.md` builds
on them.

Usage::

    .venv/bin/python benchmarks/scaling_bounds.py            # about 2-4 minutes
    .venv/bin/python benchmarks/scaling_bounds.py --quick    # small sizes, no docs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, event, text

from openmaas.auth.entities import SYSTEM
from openmaas.auth.http import Authenticator
from openmaas.auth.policy import LimitPolicy
from openmaas.auth.ratelimit import RateLimiter
from openmaas.auth.scopes import Scope
from openmaas.auth.service import AuthService
from openmaas.metering.audit import AuditLog
from openmaas.metering.usage import UsageRecord, UsageRecorder
from openmaas.registry.composition import Registry
from openmaas.registry.intake import ArchiveLimits
from openmaas.registry.object_store import S3ArtifactStore
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.serving.router import ModelRouter
from openmaas.store.database import Database

try:  # imported as `benchmarks.scaling_bounds`
    from benchmarks.markdown_sections import add_run_arguments, describe_environment, publish
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    from markdown_sections import (  # type: ignore[import-not-found,no-redef]
        add_run_arguments,
        describe_environment,
        publish,
    )

SECTION = "Scaling bounds"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379"
AUTH_TTL_S = 1.0  # settings.auth_cache_ttl_s's default
RESOLVE_TTL_S = 2.0  # settings.resolve_ttl_s's default (OPENMAAS_RESOLVE_TTL_S)
# Every token and request limit on both the project and the key: the most Redis work a
# request can cause. Limits far above what the run reaches, so nothing is refused.
FULL_POLICY = LimitPolicy(
    requests_per_minute=10**12,
    tokens_per_minute=10**12,
    tokens_per_day=10**12,
    tokens_per_month=10**12,
)
CONCURRENCY = 16  # rate-limit requests in flight per process in the N-process run
S3_KEYS = {"key": "openmaas-bench", "secret": "openmaas-bench-secret"}


@dataclass(frozen=True)
class Sizes:
    usage_rows: int = 40_000  # per recorder process
    audit_events: int = 1_000
    limit_requests: int = 2_000  # per client process
    processes: int = 4  # N concurrent recorders / limiter clients
    burst: int = 256  # concurrent requests sharing a cold cache
    stream_s: float = 5.0  # a steady stream of requests for this long
    version_mb: int = 90
    cold_rounds: int = 2

    @classmethod
    def quick(cls) -> Sizes:
        return cls(2_000, 50, 200, 2, 32, 1.2, 8, 1)


@dataclass
class Figures:
    usage: dict[str, float] = field(default_factory=dict)
    audit_per_s: float = 0.0
    limits: dict[str, float] = field(default_factory=dict)
    reads: dict[str, float] = field(default_factory=dict)
    storage: dict[str, float] = field(default_factory=dict)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)


# -- scratch services ---------------------------------------------------------------------


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped at the end (as tests/conftest.py makes them)."""
    name = f"openmaas_scaling_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextmanager
def s3_server(log_dir: Path) -> Iterator[dict[str, Any]]:
    """moto's standalone S3 server on a free loopback port; s3fs storage options for it."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (log_dir / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        yield {"endpoint_url": endpoint, **S3_KEYS, "client_kwargs": {"region_name": "us-east-1"}}
    finally:
        process.terminate()
        process.wait(timeout=10)


def count_queries(db: Database) -> list[str]:
    """Every statement `db` sends from now on, appended to the returned list."""
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


# -- usage and audit (PostgreSQL) ----------------------------------------------------------


class _CountingRecorder(UsageRecorder):
    """The project's recorder, noting how many rows each write (one transaction) holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def _insert(self, session: Any, rows: list[dict[str, Any]]) -> None:
        self.batches.append(len(rows))
        super()._insert(session, rows)


def usage_worker(url: str, rows: int) -> tuple[float, float, int, list[int]]:
    """One API process's recorder: `rows` records as fast as requests could hand them over,
    then `close()` (which writes the rest). Returns (start, end, rows written, batch sizes)."""
    db = Database(url)
    recorder = _CountingRecorder(db, flush_s=1.0)  # settings.usage_flush_s's default
    records = [
        UsageRecord(
            project="bench",
            key_id=7,
            key_prefix="om-bench0",
            model="all-minilm-l6-v2",
            version=1,
            route="/v1/embeddings",
            input_tokens=25,
            items=1,
            latency_ms=9.4,
            status=200,
            request_id=uuid.uuid4().hex,
        )
        for _ in range(rows)
    ]
    recorder.start()
    start = time.time()
    for record in records:
        recorder.record(record)
    recorder.close()
    end = time.time()
    db.close()
    return start, end, sum(recorder.batches), recorder.batches


def parallel(worker: Any, processes: int, *args: Any) -> list[Any]:
    """`worker(*args)` in `processes` fresh processes at once (one per API process)."""
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        return list(pool.map(worker, *([arg] * processes for arg in args)))


def aggregate_rate(results: list[tuple[Any, ...]]) -> float:
    """Work done per second over the span from the first start to the last end."""
    span = max(r[1] for r in results) - min(r[0] for r in results)
    return float(sum(r[2] for r in results) / span)


def measure_usage(url: str, sizes: Sizes, figures: Figures) -> None:
    one = usage_worker(url, sizes.usage_rows)
    many = parallel(usage_worker, sizes.processes, url, sizes.usage_rows)
    batches = one[3] + [b for r in many for b in r[3]]
    figures.usage = {
        "rows_per_s_1": aggregate_rate([one]),
        "rows_per_s_n": aggregate_rate(many),
        "processes": sizes.processes,
        "batch_max": max(batches),
        "batch_median": statistics.median(batches),
        "batches": len(batches),
    }
    db = Database(url)
    with db.engine.connect() as connection:
        written = connection.execute(text("SELECT count(*) FROM usage_records")).scalar_one()
    expected = sizes.usage_rows * (1 + sizes.processes)
    if written != expected:
        raise RuntimeError(f"{written} usage rows written, {expected} recorded")
    audit = AuditLog(db)
    start = time.perf_counter()
    for n in range(sizes.audit_events):
        audit.record(
            actor="om-bench0",
            project="bench",
            action="alias.set",
            target=f"models/bench/aliases/a{n}",
            before={"version": 1},
            after={"version": 2},
        )
    figures.audit_per_s = sizes.audit_events / (time.perf_counter() - start)
    db.close()


# -- rate limits (Redis) --------------------------------------------------------------------


def limits_worker(
    namespace: str, requests: int, concurrency: int = 1
) -> tuple[float, float, int, int, list[float], float]:
    """One API process's limiter doing each request's work with FULL_POLICY set, for
    `concurrency` requests in flight at a time; returns (start, end, requests, Redis
    commands, check_request latencies in ms, the process's CPU seconds)."""
    return asyncio.run(_limits(namespace, requests, concurrency))


async def _limits(
    namespace: str, requests: int, concurrency: int
) -> tuple[float, float, int, int, list[float], float]:
    # A longer timeout than the shipped 2 s: on a loaded machine 16 connections opening at
    # once can take longer, and a refusal here would measure the machine, not Redis.
    limiter = RateLimiter(REDIS_URL, namespace=namespace, timeout_s=30.0)
    backend = limiter.storage.backend
    commands = [0]
    for name in ("incr", "get"):
        original = getattr(backend, name)

        async def counted(*args: Any, _original: Any = original) -> Any:
            commands[0] += 1
            return await _original(*args)

        setattr(backend, name, counted)
    latencies: list[float] = []

    async def client(count: int) -> None:
        for _ in range(count):
            began = time.perf_counter()
            await limiter.check_request("bench", 7, FULL_POLICY, FULL_POLICY)
            latencies.append((time.perf_counter() - began) * 1000)
            held = await limiter.reserve_tokens("bench", 7, FULL_POLICY, FULL_POLICY, 64)
            await held.settle(25)

    warm_up = (
        limiter.check_request("bench", 7, FULL_POLICY, FULL_POLICY) for _ in range(concurrency)
    )
    await asyncio.gather(*warm_up)  # every connection of the pool opened before timing
    commands[0] = 0
    each = requests // concurrency
    start, cpu = time.time(), time.process_time()
    await asyncio.gather(*(client(each) for _ in range(concurrency)))
    end, cpu = time.time(), time.process_time() - cpu
    await limiter.close()
    return start, end, each * concurrency, commands[0], latencies, cpu


def measure_limits(sizes: Sizes, figures: Figures) -> None:
    namespace = f"openmaas-scaling-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        one = limits_worker(namespace, sizes.limit_requests)
        server_cpu = _redis_cpu_s(client)
        many = parallel(
            limits_worker, sizes.processes, namespace, sizes.limit_requests, CONCURRENCY
        )
        server_cpu = _redis_cpu_s(client) - server_cpu
    finally:
        for key in client.scan_iter(match=f"{namespace}*", count=1000):
            client.delete(key)
        client.close()
    served_n = sum(r[2] for r in many)
    per_request = one[3] / one[2]
    figures.limits = {
        "requests_per_s_1": aggregate_rate([one]),
        "requests_per_s_n": aggregate_rate(many),
        "commands_per_request": per_request,
        "commands_per_s_1": aggregate_rate([one]) * per_request,
        "commands_per_s_n": aggregate_rate(many) * per_request,
        "check_p50_ms": statistics.median(one[4]),
        "check_p99_ms": sorted(one[4])[int(len(one[4]) * 0.99)],
        "check_p50_ms_n": statistics.median(b for r in many for b in r[4]),
        "processes": sizes.processes,
        "concurrency": CONCURRENCY,
        # CPU per request in the N-process run: the API processes' limiter work, and the
        # Redis server's (all its clients: others using this Redis count too)
        "client_cpu_ms": sum(r[5] for r in many) / served_n * 1000,
        "server_cpu_ms": server_cpu / served_n * 1000,
    }


def _redis_cpu_s(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")  # type: ignore[assignment]  # sync client
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- store reads per request, and object storage ------------------------------------------


def write_version(directory: Path, megabytes: int) -> Path:
    """A ~`megabytes` MB model directory of random bytes (never committed)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"architectures": ["BertModel"]}')
    with (directory / "model.safetensors").open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(1024 * 1024))
    return directory


def make_registry(url: str, cache: Path, options: dict[str, Any]) -> Registry:
    store = S3ArtifactStore("s3://openmaas-bench/artifacts", cache, storage_options=options)
    registry = Registry.create(
        Database(url),
        store,
        allow_pickle=False,
        limits=ArchiveLimits(max_total_bytes=2**31, max_members=100),
    )
    registry.start()
    return registry


def measure_storage(url: str, work: Path, sizes: Sizes, figures: Figures) -> Registry:
    import boto3  # type: ignore[import-untyped]

    with s3_server(work) as options:
        boto3.client(
            "s3",
            endpoint_url=options["endpoint_url"],
            aws_access_key_id=S3_KEYS["key"],
            aws_secret_access_key=S3_KEYS["secret"],
            region_name="us-east-1",
        ).create_bucket(Bucket="openmaas-bench")
        source = write_version(work / "model", sizes.version_mb)
        publisher = make_registry(url, work / "cache-publisher", options)
        start = time.perf_counter()
        version = publisher.registration.register_plan(
            "blob",
            plan_directory(source),
            VersionSpec(task="embedding", project="bench"),
            caller=SYSTEM,
        )
        upload_s = time.perf_counter() - start
        megabytes = version.size_bytes / 1e6
        cold: list[float] = []
        warm: list[float] = []
        for round_ in range(sizes.cold_rounds):
            reader = make_registry(url, work / f"cache-node{round_}", options)
            for timings in (cold, warm):  # the first open downloads; the second checks ETags
                start = time.perf_counter()
                reader.open_files("blob", caller=SYSTEM).close()
                timings.append(time.perf_counter() - start)
            reader.db.close()
        figures.storage = {
            "megabytes": megabytes,
            "upload_s": upload_s,
            "cold_s": statistics.median(cold),
            "warm_s": statistics.median(warm),
            "cold_mb_per_s": megabytes / statistics.median(cold),
        }
    return publisher


async def _requests_reads(
    registry: Registry, authenticator: Authenticator, key: str, sizes: Sizes
) -> dict[str, float]:
    router = ModelRouter(registry, ttl_s=RESOLVE_TTL_S)
    seen = count_queries(registry.db)

    async def request() -> None:  # what every inference request reads before serving
        who = await authenticator.authenticate(key, "127.0.0.1")
        await router.resolve("blob", caller=who)

    await asyncio.gather(*(request() for _ in range(sizes.burst)))
    burst = len(seen)
    seen.clear()
    served = 0
    start = time.monotonic()
    while time.monotonic() - start < sizes.stream_s:
        await asyncio.gather(*(request() for _ in range(8)))
        served += 8
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - start
    return {
        "burst_requests": sizes.burst,
        "burst_queries": burst,
        "stream_requests": served,
        "stream_s": elapsed,
        "stream_queries": len(seen),
        "queries_per_s": len(seen) / elapsed,
    }


def measure_reads(registry: Registry, sizes: Sizes, figures: Figures) -> None:
    auth = AuthService(registry.db, os.urandom(32))
    _, key = auth.create_key("bench", "load", [Scope.INFERENCE], caller=SYSTEM)
    authenticator = Authenticator(auth, ttl_s=AUTH_TTL_S)  # no brute-force guard: no Redis
    figures.reads = asyncio.run(_requests_reads(registry, authenticator, key, sizes))


# -- the run and its report -----------------------------------------------------------------


def run(sizes: Sizes) -> Figures:
    figures = Figures(load=os.getloadavg())
    with scratch_database() as url, tempfile.TemporaryDirectory(prefix="om-scaling-") as tmp:
        db = Database(url)
        db.migrate()
        AuthService(db, os.urandom(32)).create_project("bench", caller=SYSTEM)
        db.close()
        print("usage and audit on PostgreSQL ...", flush=True)
        measure_usage(url, sizes, figures)
        print("rate limits on Redis ...", flush=True)
        measure_limits(sizes, figures)
        print("object storage on moto's S3 server ...", flush=True)
        registry = measure_storage(url, Path(tmp), sizes, figures)
        print("store reads per request ...", flush=True)
        measure_reads(registry, sizes, figures)
        registry.db.close()
    end_load = os.getloadavg()
    figures.load = tuple(max(a, b) for a, b in zip(figures.load, end_load, strict=True))  # type: ignore[assignment]
    return figures


def markdown(figures: Figures, sizes: Sizes, minutes: float) -> str:
    u, lim, r, s = figures.usage, figures.limits, figures.reads, figures.storage
    n = int(u["processes"])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = describe_environment(["sqlalchemy", "psycopg", "redis", "limits", "s3fs", "moto"], 1)
    load = ", ".join(f"{x:.1f}" for x in figures.load)
    return (
        f"## {SECTION}\n\n"
        f"Measured {when} with `python benchmarks/scaling_bounds.py` ({minutes:.1f} minutes) "
        f"on {env}. PostgreSQL, Redis and the S3 API server (moto's standalone server) ran on "
        f"the same machine as the load. **The machine was shared with other work**: load "
        f"average {load} (the highest of the 1, 5 and 15 minute averages at the start and the "
        "end) on its CPUs, so these are floors for what the services absorb, not their "
        "ceilings. What they rest on, and what bounds a fleet, is in "
        "[scaling.md](scaling.md#estimate-throughput-per-node-and-what-bounds-10-and-100-nodes).\n\n"
        "| What | Code path | 1 process (limits: 1 request at a time) | "
        f"{n} processes at once (limits: {CONCURRENCY} in flight each) |\n|---|---|---:|---:|\n"
        f"| usage rows/s into PostgreSQL | `UsageRecorder` (COPY, batches of up to 500) | "
        f"{u['rows_per_s_1']:,.0f} | {u['rows_per_s_n']:,.0f} |\n"
        f"| audit events/s | `AuditLog.record` (a transaction each) | "
        f"{figures.audit_per_s:,.0f} |  |\n"
        f"| requests/s of rate-limit work on Redis | `RateLimiter` check, reserve, settle | "
        f"{lim['requests_per_s_1']:,.0f} | {lim['requests_per_s_n']:,.0f} |\n"
        f"| Redis commands/s | the same ({lim['commands_per_request']:.0f} per request) | "
        f"{lim['commands_per_s_1']:,.0f} | {lim['commands_per_s_n']:,.0f} |\n"
        f"| `check_request` latency p50 (ms) | `RateLimiter.check_request` | "
        f"{lim['check_p50_ms']:.2f} | {lim['check_p50_ms_n']:.2f} |\n"
        f"| `check_request` latency p99 (ms) | | {lim['check_p99_ms']:.2f} |  |\n"
        f"| CPU ms per request: limiter client / Redis server | the same |  | "
        f"{lim['client_cpu_ms']:.2f} / {lim['server_cpu_ms']:.2f} |\n\n"
        "How it is measured:\n\n"
        f"- Usage: each process builds a `UsageRecorder` (flush every 1 s, as shipped) on a "
        f"fresh database, hands it {sizes.usage_rows:,} one-sentence embedding records as fast "
        f"as it can and closes it; rows/s over the span from the first record to the last "
        f"write, {n} processes spawned together. Rows per write (one transaction each): "
        f"median {u['batch_median']:.0f}, largest {u['batch_max']:.0f}, over "
        f"{u['batches']:.0f} writes; every row was counted back.\n"
        f"- Audit: {sizes.audit_events:,} `AuditLog.record` calls in a row from one thread.\n"
        f"- Rate limits: requests-, tokens-per-minute, tokens-per-day and -month limits on "
        f"both the project and the key (the most a request can cost), each request "
        f"`check_request`, `reserve_tokens(64)` and `settle(25)` in turn, "
        f"{sizes.limit_requests:,} requests per process: one at a time in the 1-process run, "
        f"{CONCURRENCY} in flight per process (asyncio tasks sharing its connection pool, "
        "as an API process's requests do) in the N-process run; commands "
        "counted at the `limits` storage (each is one Redis round trip; an `incr` is one "
        "pipelined INCRBY+EXPIRE). CPU per request in the N-process run: the API processes' "
        "own CPU time, and the Redis server's (`INFO cpu`; any other client of this Redis at "
        "the time counts too).\n"
        f"- Store reads per request: `Authenticator` (key cache {AUTH_TTL_S:g} s, "
        f"`OPENMAAS_AUTH_CACHE_TTL_S`'s default) then `ModelRouter.resolve` (resolution "
        f"cache {RESOLVE_TTL_S:g} s, `OPENMAAS_RESOLVE_TTL_S`'s default), statements counted "
        f"with a SQLAlchemy `before_cursor_execute` listener: a burst of "
        f"{r['burst_requests']:.0f} concurrent requests with one key and one model on cold "
        f"caches cost {r['burst_queries']:.0f} statements; a steady stream of "
        f"{r['stream_requests']:,.0f} requests over {r['stream_s']:.1f} s cost "
        f"{r['stream_queries']:.0f} ({r['queries_per_s']:.1f}/s, whatever the request rate: "
        "one key verification per key per second, one resolution per reference per 2 s).\n"
        f"- Object storage: a {s['megabytes']:.0f} MB version (random bytes) registered "
        f"through `S3ArtifactStore` (multipart upload, 16 MiB parts): {s['upload_s']:.1f} s. "
        f"Opened by a second registry on an empty cache (another node): cold "
        f"{s['cold_s']:.2f} s ({s['cold_mb_per_s']:.0f} MB/s: download, then the SHA-256 "
        f"check), warm {s['warm_s']:.2f} s (one LIST, ETags compared, the SHA-256 check); "
        f"median of {sizes.cold_rounds} fresh caches.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_run_arguments(parser, rounds=False)
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes()
    started = time.perf_counter()
    figures = run(sizes)
    publish(markdown(figures, sizes, (time.perf_counter() - started) / 60), args)


if __name__ == "__main__":
    main()
