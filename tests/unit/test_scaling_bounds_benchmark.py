"""benchmarks/scaling_bounds.py end to end on tiny sizes, against the real PostgreSQL, Redis
and moto S3 server it measures, so the script cannot rot; and its report."""

from __future__ import annotations

from benchmarks import scaling_bounds as bench
from benchmarks.markdown_sections import replace_section

TINY = bench.Sizes(
    usage_rows=600,
    audit_events=5,
    limit_requests=32,
    processes=2,
    burst=16,
    stream_s=0.5,
    version_mb=2,
    cold_rounds=1,
)


def test_a_tiny_run_measures_every_service_and_reports_it() -> None:
    figures = bench.run(TINY)

    usage = figures.usage
    # Every record of the 1 + 2 recorders was written (run() counts them back) in batches no
    # larger than the recorder's 500 rows.
    assert usage["batch_max"] == 500
    assert usage["batches"] >= 2 * 3  # 600 rows: at least two writes per recorder
    assert usage["rows_per_s_1"] > 0
    assert usage["rows_per_s_n"] > 0
    assert figures.audit_per_s > 0
    # Project and key each with 4 limits: check_request reads all 8 counters and increments
    # the 2 per-minute request counters; reserving and settling tokens touch the 6 token ones.
    assert figures.limits["commands_per_request"] == 8 + 2 + 6 + 6
    assert figures.limits["check_p50_ms"] > 0
    assert figures.limits["client_cpu_ms"] > 0
    # A cold burst shares one key verification and one resolution; a stream within both
    # caches' lifetimes reads the store at most once per expiry of each.
    reads = figures.reads
    assert 0 < reads["burst_queries"] < reads["burst_requests"]
    assert reads["stream_queries"] < reads["stream_requests"] / 10
    storage = figures.storage
    assert 2.0 < storage["megabytes"] < 2.2
    assert storage["cold_s"] > 0
    assert storage["warm_s"] > 0
    assert len(figures.load) == 3

    section = bench.markdown(figures, TINY, 0.5)
    assert section.startswith(f"## {bench.SECTION}\n")
    assert "| usage rows/s into PostgreSQL |" in section
    assert "the same (22 per request)" in section
    assert "load average" in section
    document = replace_section("# Benchmarks\n\n## Other\n\nkept\n", section)
    assert "kept" in document
    assert document.count(f"## {bench.SECTION}") == 1
