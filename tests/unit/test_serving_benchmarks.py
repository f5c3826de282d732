"""The default-path and Ray Serve benchmarks' reports: figures are medians over rounds, and
each target is judged on the median of its per-round ratios."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from benchmarks import default_path, ray_serving
from benchmarks.embeddings_serving import Measurement
from benchmarks.markdown_sections import replace_section


def measurement(rate: float, p50_ms: float = 10.0, sentences: int = 1000) -> Measurement:
    latencies = tuple(p50_ms for _ in range(10))
    return Measurement(sentences, sentences / rate, latencies, 0.1, sentences, 1.0, 0.0)


def default_path_results() -> default_path.Results:
    rounds = [  # PyTorch, ORT arrival 32, 64, ORT sorted by batch, default path, int8
        (200.0, 300.0, 350.0, {16: 380.0, 32: 400.0, 64: 390.0}, 420.0, 900.0),
        (100.0, 150.0, 140.0, {16: 190.0, 32: 200.0, 64: 195.0}, 150.0, 250.0),  # slow
        (210.0, 310.0, 330.0, {16: 390.0, 32: 410.0, 64: 400.0}, 400.0, 820.0),
    ]
    setup = default_path.Setup(
        variant_jobs={"all-minilm-l6-v2:1": ("succeeded", 12.0)},
        served_by="onnx",
        int8_reference="minilm-int8:1",
        int8_job_s=20.0,
        int8_metrics={"builtin_mean_cosine_to_parent": 0.993},
        cosine_mean=0.9925,
        cosine_min=0.97,
    )
    figures = [
        default_path.RoundFigures(
            pytorch, arrival, arrival64, sorted_rates, measurement(server), measurement(int8)
        )
        for pytorch, arrival, arrival64, sorted_rates, server, int8 in rounds
    ]
    return default_path.Results(
        setup, figures, 3.0, 600.0, datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
    )


def test_default_path_targets_are_the_median_of_each_rounds_ratios() -> None:
    results = default_path_results()
    # Per round, over PyTorch: 2.1, 1.5, 1.905; over ORT's best: 1.05, 0.75, 0.976;
    # int8 over the default path: 2.143, 1.667, 2.05.
    assert round(results.median_ratio("vs_pytorch"), 3) == 1.905
    assert round(results.median_ratio("vs_ort"), 3) == 0.976
    assert round(results.median_ratio("int8"), 3) == 2.05
    # Over the best of arrival-order batches of 32 or 64: 1.2, 1.0, 1.212.
    assert round(results.median_ratio("vs_ort_online"), 3) == 1.2
    section = default_path.render_section(results, threads=2)
    assert section.startswith(default_path.SECTION_HEADING)
    assert "in arrival order: **not met** (1.90x)" in section
    assert "cut into batches): **met** (97.6%)" in section
    assert "what has arrived): **met** (120.0%)" in section
    assert ">= 2x the default path: **met** (2.05x), at mean cosine 0.9925" in section
    # Table figures are medians over the rounds.
    assert "| **Server, default path** (64 clients, 1 sentence/request) | 400 |" in section
    assert (
        "| In-process ONNX Runtime fp32, batch 32, whole round sorted by length | 400 |" in section
    )
    assert "| In-process ONNX Runtime fp32, batch 64, arrival order | 330 |" in section
    assert "`all-minilm-l6-v2:1` succeeded in 12 s" in section
    assert "served_by: onnx" in section


def test_sentences_sort_by_token_count() -> None:
    class Counter:
        def count_tokens(self, texts: list[str]) -> list[int]:
            return [len(text.split()) for text in texts]

    texts = ["a b c", "a", "a b"]
    assert default_path.by_length(Counter(), texts) == ["a", "a b", "a b c"]  # type: ignore[arg-type]
    assert default_path.cut(["a", "b", "c"], 2) == [["a", "b"], ["c"]]


def test_ray_serving_judges_the_median_round_and_writes_its_section(tmp_path: Path) -> None:
    embedded = [
        ray_serving.Figures("embedded", measurement(100, 8.0), measurement(250)),
        ray_serving.Figures("embedded", measurement(100, 9.0), measurement(200)),
        ray_serving.Figures("embedded", measurement(100, 8.5), measurement(240)),
    ]
    ray = [
        ray_serving.Figures("ray-serve", measurement(80, 10.0), measurement(225)),  # 90%, +2
        ray_serving.Figures("ray-serve", measurement(80, 13.0), measurement(150)),  # 75%, +4
        ray_serving.Figures("ray-serve", measurement(80, 11.0), measurement(216)),  # 90%, +2.5
    ]
    uncoalesced = [
        ray_serving.Figures("ray-serve-uncoalesced", measurement(80, 12.0), measurement(150))
    ] * 3
    results = ray_serving.Results(
        embedded, ray, 300.0, datetime(2026, 12, 7, tzinfo=UTC), uncoalesced
    )
    assert [round(s, 2) for s in results.shares()] == [0.9, 0.75, 0.9]
    assert results.extra_ms() == [2.0, 4.0, 2.5]
    section = ray_serving.render_section(results, ray_serving.FULL)
    assert "embedded throughput: 90% **met** (per round: 90%, 75%, 90%)" in section
    assert "p50 latency: +2.50 ms **met**" in section
    assert "| embedded | 8.50 | 8.50 | 240 | 10 |" in section
    assert "| Ray Serve, a call per request | 12.00 | 12.00 | 150 | 10 |" in section
    document = replace_section("# Benchmarks\n\n## Other\n\ntext\n", section)
    assert "## Other\n\ntext" in document
    assert ray_serving.HEADING in document


def test_ray_latency_takes_the_hop_as_the_callers_span_less_the_replicas() -> None:
    from benchmarks import ray_latency

    from tests.otlp_receiver import ReceivedSpan

    def span(name: str, span_id: str, parent: str, start_ms: float, end_ms: float) -> ReceivedSpan:
        service = "openmaas-replica" if name.startswith("openmaas.replica") else "openmaas"
        return ReceivedSpan(
            service,
            name,
            "t" * 32,
            span_id,
            parent,
            int(start_ms * 1e6),
            int(end_ms * 1e6),
            {},
            [],
            0,
        )

    spans = [
        span("POST /v1/embeddings", "a", "client", 0.0, 20.0),
        span("openmaas.infer", "b", "a", 2.0, 18.0),
        span("openmaas.replica.infer", "c", "b", 5.0, 14.0),
        span("openmaas.queue_wait", "d", "c", 5.0, 6.0),
        span("openmaas.batch_run", "e", "c", 6.0, 13.0),
    ]
    figures = ray_latency.decompose(spans, "client")
    assert figures["server"] == 20.0
    assert figures["replica call"] == 9.0
    assert figures["hop"] == 7.0  # 16 ms around the call, 9 in the replica
    assert (figures["queue wait"], figures["batch run"]) == (1.0, 7.0)
