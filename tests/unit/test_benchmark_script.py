"""The embedding serving benchmark's helpers: statistics, sentences, the report, the client."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from benchmarks import embeddings_serving as bench
from benchmarks.http_load import HttpLoadClient

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [float(v) for v in np.random.default_rng(7).exponential(10.0, size=37)]
    assert bench.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_one_value_and_bad_input() -> None:
    assert bench.percentile([4.0], 99) == 4.0
    assert bench.percentile([1.0, 3.0], 50) == 2.0
    with pytest.raises(ValueError, match="no values"):
        bench.percentile([], 50)
    with pytest.raises(ValueError, match="0..100"):
        bench.percentile([1.0], 101)


def test_sentences_are_deterministic_distinct_and_sentence_like() -> None:
    first = bench.make_sentences(2000)
    assert first == bench.make_sentences(2000)
    assert len(set(first)) == len(first)
    assert bench.make_sentences(5, start=100) == first[100:105]
    assert all(s[0].isupper() and s.endswith(".") for s in first)
    words = [len(s.split()) for s in first]
    assert min(words) >= 8
    assert max(words) <= 36
    assert 14 <= sum(words) / len(words) <= 22  # about 24 tokens with special tokens
    # The stride walks every mix exactly once.
    assert math.gcd(bench.SENTENCE_STRIDE, bench.SENTENCE_COUNT) == 1


def test_sentence_plan_phases_do_not_share_sentences() -> None:
    workload = bench.QUICK
    plan = bench.SentencePlan.for_workload(workload)
    assert len(plan.single) == workload.single_requests
    assert len(plan.concurrent) == workload.concurrent_sentences
    assert len(plan.batched) == workload.batched_sentences
    every = [*plan.warmup, *plan.measured]
    assert len(set(every)) == len(every)
    assert plan == bench.SentencePlan.for_workload(workload)


def test_requests_hold_one_string_or_a_list() -> None:
    single, *_ = bench.make_requests(["a.", "b."], 1)
    assert single.sentences == 1
    assert single.body == b'{"model":"all-minilm-l6-v2","input":"a."}'
    batched = bench.make_requests(["a.", "b.", "c."], 2)
    assert [r.sentences for r in batched] == [2, 1]
    assert b'"input":["a.","b."]' in batched[0].body


def _measurement(sentences: int, seconds: float, latency_ms: float) -> bench.Measurement:
    return bench.Measurement(
        sentences=sentences,
        seconds=seconds,
        latencies_ms=tuple(latency_ms + i / 10 for i in range(20)),
        client_cpu_s=0.1 * seconds,
        requests=sentences,
        server_cpu_s=0.008 * sentences,
        other_cpu_s=0.0,
    )


def _system(name: str, scale: float) -> bench.SystemResult:
    return bench.SystemResult(
        name=name,
        single=_measurement(200, 2.0 * scale, 9.0 * scale),
        concurrent=_measurement(1024, 4.0 * scale, 200.0 * scale),
        batched=_measurement(1024, 4.0 * scale, 120.0 * scale),
        startup_s=5.0,
        probe=(1.0, 0.0),
        client="aiohttp 3",
    )


def _ceiling(
    single_ms: tuple[float, ...] = (8.0, 8.0, 9.0),
    rates: dict[int, float] | None = None,
    cpu_ms: dict[int, float] | None = None,
) -> bench.Ceiling:
    return bench.Ceiling(
        single_ms=single_ms,
        rates=rates or {16: 250.0, 32: 270.0, 64: 260.0},
        cpu_ms_per_sentence=cpu_ms or {16: 7.5, 32: 7.0, 64: 7.2},
        other_cpu_cores=0.01,
        probe=(1.0, 0.0),
    )


def _results(*rounds: bench.Round) -> bench.BenchmarkResults:
    """One round by default: OpenMaaS at 256 sentences/s (95% of 270), the baseline 4x slower."""
    default = bench.Round(_ceiling(), _system("OpenMaaS", 1.0), _system("baseline", 4.0))
    return bench.BenchmarkResults(
        rounds=rounds or (default,),
        workload=bench.FULL,
        tokens=bench.TokenStats(24.5, 12, 39),
        machine="2 CPUs (test)",
        measured_at=datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
        seconds=200.0,
    )


def test_table_compares_systems_and_checks_the_targets() -> None:
    table = bench.render_table(_results())
    lines = table.splitlines()
    assert lines[0].startswith("| Load | Figure | OpenMaaS |")
    assert set(lines[1]) <= {"|", "-", ":"}
    assert len(lines) == 2 + 8  # (a) 2 figures, (b) and (c) 3 each
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    concurrent = next(line for line in lines if "64 clients" in line and "throughput" in line)
    assert "| 256 | 64 | 270 (batch 32) | 4.0x |" in concurrent
    assert "94.8% ✅" in concurrent
    single = lines[2]
    assert "| 9.9 | 37.0 | 8.0 (one `embed` call) |" in single
    assert "+1.9 ms ✅" in single


def test_table_marks_missed_targets() -> None:
    slow = bench.Round(_ceiling(), _system("OpenMaaS", 2.0), _system("baseline", 4.0))
    table = bench.render_table(_results(slow))
    assert "47.4% ❌" in table
    assert "❌" in table.splitlines()[2]


def test_table_says_slower_where_openmaas_is_slower() -> None:
    fast_baseline = bench.Round(_ceiling(), _system("OpenMaaS", 1.0), _system("baseline", 0.5))
    single = bench.render_table(_results(fast_baseline)).splitlines()[2]
    assert "1.8x slower" in single  # 9.9 ms against 5.5


def test_median_index_picks_the_middle_value() -> None:
    assert bench.median_index([3.0, 1.0, 2.0]) == 2
    assert bench.median_index([7.0]) == 0
    assert bench.median_index([4.0, 1.0, 3.0, 2.0]) == 3  # even: the lower of the middle two
    assert bench.median_index([2.0, 1.0, 2.0]) == 0  # equal values keep their order
    with pytest.raises(ValueError, match="no values"):
        bench.median_index([])


def _round(
    ceiling_rate: float, ceiling_p50: float, concurrent_rate: float, single_p50: float
) -> bench.Round:
    """A round with OpenMaaS's figures of the two targets, and its ceiling's, as given."""
    ceiling = _ceiling(single_ms=(ceiling_p50,), rates={32: ceiling_rate}, cpu_ms={32: 7.0})
    ours = replace(
        _system("OpenMaaS", 1.0),
        single=_measurement(200, 2.0, single_p50 - 0.95),  # p50 = the first latency + 0.95
        concurrent=_measurement(1024, 1024 / concurrent_rate, 200.0),
    )
    return bench.Round(ceiling, ours, _system("baseline", 4.0))


# OpenMaaS over the ceiling: 81%, 84%, 86%; p50 over one in-process call: +1.1, +1.9, +1.4 ms.
# The ratios of the medians would read 86% (240.8 / 280) and +1.1 ms (9.1 - 8.0).
SPREAD = (
    _round(ceiling_rate=300.0, ceiling_p50=8.0, concurrent_rate=243.0, single_p50=9.1),
    _round(ceiling_rate=250.0, ceiling_p50=9.0, concurrent_rate=210.0, single_p50=10.9),
    _round(ceiling_rate=280.0, ceiling_p50=7.0, concurrent_rate=240.8, single_p50=8.4),
)


def test_each_scenario_takes_the_whole_measurement_of_its_median_round() -> None:
    results = _results(*SPREAD)
    ours = results.openmaas
    assert ours.single is SPREAD[0].openmaas.single  # p50s 9.1, 10.9, 8.4
    assert ours.concurrent is SPREAD[2].openmaas.concurrent  # 243, 210, 240.8 sentences/s
    assert ours.batched == SPREAD[0].openmaas.batched  # the same in every round
    fast, slow = _measurement(1024, 2.0, 100.0), _measurement(1024, 8.0, 400.0)
    middle = _measurement(1024, 4.0, 150.0)
    systems = [replace(SPREAD[0].baseline, concurrent=m) for m in (slow, fast, middle)]
    chosen = bench.median_system(systems).concurrent
    assert chosen is middle
    assert (chosen.p50_ms, chosen.p99_ms) == (middle.p50_ms, middle.p99_ms)


def test_ceiling_takes_the_median_rate_per_batch_size() -> None:
    rounds = [
        _ceiling((8.0, 9.0, 10.0), {16: 200.0, 32: 300.0}, {16: 9.0, 32: 7.0}),
        _ceiling((7.0, 7.5, 12.0), {16: 205.0, 32: 250.0}, {16: 8.0, 32: 7.5}),
        _ceiling((9.5, 9.5, 9.5), {16: 210.0, 32: 280.0}, {16: 8.5, 32: 7.2}),
    ]
    rounds[2] = replace(rounds[2], other_cpu_cores=0.2)
    ceiling = bench.median_ceiling(rounds)
    assert ceiling.rates == {16: 205.0, 32: 280.0}
    assert ceiling.cpu_ms_per_sentence == {16: 8.0, 32: 7.2}  # each from its median round
    assert ceiling.single_ms == (8.0, 9.0, 10.0)  # p50s 9.0, 7.5, 9.5
    assert ceiling.best_batch_size == 32
    assert ceiling.other_cpu_cores == 0.2
    assert bench.median_ceiling(rounds[:1]) == rounds[0]


def test_targets_are_the_medians_of_the_per_round_ratios() -> None:
    results = _results(*SPREAD)
    assert [round(r.ceiling_share, 2) for r in SPREAD] == [0.81, 0.84, 0.86]
    assert results.ceiling_share == pytest.approx(0.84)
    assert results.single_overhead_ms == pytest.approx(1.4)
    lines = bench.render_table(results).splitlines()
    concurrent = next(line for line in lines if "64 clients" in line and "throughput" in line)
    assert "| 241 | 64 | 280 (batch 32) |" in concurrent  # the median figures
    assert "84.0% ❌" in concurrent  # not 86%
    assert "| 9.1 | 37.0 | 8.0 (one `embed` call) |" in lines[2]
    assert "+1.4 ms ✅" in lines[2]  # not +1.1


def test_section_lists_every_rounds_target_figures() -> None:
    section = bench.render_section(_results(*SPREAD))
    shares = "81.0%, 84.0%, 86.0% (median 84.0%)"
    assert f"- 64 clients over the ceiling per round: {shares}.\n" in section
    assert (
        "- 1 client p50 minus one in-process call per round: +1.1, +1.9, +1.4 ms "
        "(median +1.4 ms).\n"
    ) in section
    assert "the run measured 3 rounds" in section
    assert "median of each target's per-round figures" in section
    assert "better figures" not in section
    assert bench.round_notes(_results())[0] == (
        "64 clients over the ceiling per round: 94.8% (median 94.8%)"
    )


def test_results_need_a_round() -> None:
    with pytest.raises(ValueError, match="no rounds"):
        replace(_results(), rounds=())


def test_section_states_how_it_was_measured() -> None:
    section = bench.render_section(_results())
    assert section.startswith("## Embedding serving\n")
    assert "2025-01-02 03:04 UTC" in section
    assert "2 CPUs (test)" in section
    assert "24.5 tokens on average" in section
    assert "the run measured 1 round." in section
    assert bench.render_table(_results()) in section


def test_replace_section_keeps_other_sections() -> None:
    ours = "## Embedding serving\n\nnew figures\n"
    document = (
        "# Benchmarks\n\nintro\n\n## Training\n\nkept\n\n"
        "## Embedding serving\n\nold figures\n\n### detail\n\nold\n\n## Zeta\n\nalso kept\n"
    )
    replaced = bench.replace_section(document, ours)
    assert replaced == (
        "# Benchmarks\n\nintro\n\n## Training\n\nkept\n\n"
        "## Embedding serving\n\nnew figures\n\n## Zeta\n\nalso kept\n"
    )
    assert bench.replace_section(replaced, ours) == replaced


def test_replace_section_appends_when_missing() -> None:
    ours = "## Embedding serving\n\nfigures\n"
    assert bench.replace_section("", ours) == ours
    assert bench.replace_section("# Benchmarks\n\nintro\n", ours) == (
        "# Benchmarks\n\nintro\n\n## Embedding serving\n\nfigures\n"
    )


def test_importing_the_script_loads_no_model_libraries() -> None:
    code = (
        "import sys, benchmarks.embeddings_serving\n"
        "assert not {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# -- the load client ---------------------------------------------------------------------------


class _TinyServer:
    """Answers each request on a connection with `replies[i]`, written in small pieces."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0)
                if not reply:  # hang up instead of answering
                    break
                for start in range(0, len(reply), 7):
                    writer.write(reply[start : start + 7])
                    await writer.drain()
                    await asyncio.sleep(0)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


def _reply(status: str, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


@pytest.mark.asyncio
async def test_load_client_reuses_a_connection_and_reads_split_responses() -> None:
    server = _TinyServer(
        [
            _reply("200 OK", b'{"a": 1}', "content-type: application/json", "Content-Length: 8"),
            _reply("429 Too Many Requests", b"slow down", "content-length: 9", "x-more: 1"),
        ]
    )
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener, HttpLoadClient("127.0.0.1", port, {"authorization": "Bearer k"}) as c:
        assert await c.post("/v1/embeddings", b'{"x": 1}') == (200, b'{"a": 1}')
        assert await c.post("/v1/embeddings", b"{}") == (429, b"slow down")
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/embeddings HTTP/1.1\r\n")
    assert b"authorization: Bearer k\r\n" in first
    assert b"content-type: application/json\r\n" in first
    assert first.endswith(b'content-length: 8\r\n\r\n{"x": 1}')


@pytest.mark.asyncio
async def test_load_client_reports_a_closed_connection_and_reconnects() -> None:
    server = _TinyServer([b"", _reply("200 OK", b"ok", "content-length: 2")])
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener, HttpLoadClient("127.0.0.1", port) as client:
        with pytest.raises(ConnectionError, match="closed the connection"):
            await client.post("/v1/embeddings", b"{}")
        assert await client.post("/v1/embeddings", b"{}") == (200, b"ok")
    assert server.connections == 2


@pytest.mark.asyncio
async def test_load_client_refuses_responses_without_a_length() -> None:
    chunked = _reply("200 OK", b"2\r\nok\r\n0\r\n\r\n", "transfer-encoding: chunked")
    server = _TinyServer([chunked])
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener, HttpLoadClient("127.0.0.1", port) as client:
        with pytest.raises(ConnectionError, match="Content-Length"):
            await client.post("/v1/embeddings", b"{}")


@pytest.mark.asyncio
async def test_load_client_times_out() -> None:
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n{}")
        await reader.read()  # no answer: wait for the client to give up and hang up
        writer.close()
        hung_up.set()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener, HttpLoadClient("127.0.0.1", port, timeout_s=0.05) as client:
        with pytest.raises(TimeoutError, match="no response within"):
            await client.post("/v1/embeddings", b"{}")
        await hung_up.wait()


@pytest.mark.asyncio
async def test_load_client_skips_connections_the_server_closed_while_idle() -> None:
    opened: list[int] = []

    async def one_reply_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        await reader.readuntil(b"\r\n\r\n{}")
        writer.write(_reply("200 OK", b"ok", "content-length: 2"))
        writer.close()  # as a server does once a keep-alive connection has idled too long
        await writer.wait_closed()

    listener = await asyncio.start_server(one_reply_each, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener, HttpLoadClient("127.0.0.1", port) as client:
        assert await client.post("/v1/embeddings", b"{}") == (200, b"ok")
        await asyncio.sleep(0.05)  # the hang-up reaches the idle connection
        assert await client.post("/v1/embeddings", b"{}") == (200, b"ok")
    assert len(opened) == 2


def test_load_client_runs_on_the_benchmarks_event_loop() -> None:
    async def exchange() -> tuple[int, bytes]:
        server = _TinyServer([_reply("200 OK", b"{}", "content-length: 2")])
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with listener, HttpLoadClient("127.0.0.1", port) as client:
            return await client.post("/v1/embeddings", b"{}")

    assert bench.run_load(exchange()) == (200, b"{}")  # uvloop where installed
