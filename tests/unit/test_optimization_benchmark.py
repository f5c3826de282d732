"""The optimization benchmark's report: medians over rounds, ratios per round."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import optimization as bench
from benchmarks.markdown_sections import replace_section


def engine(key: str, tmp_path: Path) -> bench.Engine:
    model: Any = None  # the report never calls the model
    return bench.Engine(key, f"label {key}", f"made as {key}", model, tmp_path, tmp_path)


def results(tmp_path: Path) -> bench.Results:
    speeds = [  # per round: parent, quantize
        [bench.Speed(10.0, 100.0), bench.Speed(2.0, 300.0)],
        [bench.Speed(20.0, 50.0), bench.Speed(5.0, 100.0)],  # a slow round for both
        [bench.Speed(12.0, 110.0), bench.Speed(2.0, 330.0)],
    ]
    return bench.Results(
        engines=[engine("parent", tmp_path), engine("quantize", tmp_path)],
        rounds=speeds,
        quality={"quantize": {"mean": 0.99213, "min": 0.9612}},
        sizes={"parent": (91_600_000, 90_900_000), "quantize": (59_700_000, 59_000_000)},
        interleaved=(14.0, 6.0),
        sentences=bench.Sentences.make(latency_calls=5, throughput_sentences=64),
        threads=2,
        load_before=(0.5, 0.4, 0.3),
        gate_waited_s=1.0,
        seconds=60.0,
        measured_at=datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
    )


def test_figures_are_medians_and_ratios_the_median_of_each_rounds_ratio(tmp_path: Path) -> None:
    measured = results(tmp_path)
    assert measured.median_speed(1) == bench.Speed(2.0, 300.0)
    # Latency speed-ups per round 5, 4, 6; throughput ratios 3, 2, 3.
    assert measured.ratios(1) == (5.0, 3.0)
    table = bench.render_table(measured)
    assert (
        "| label quantize | 2.00 | 5.00x faster | 300 | 3.00x | 59.7 | 59.0 | 0.9921 | 0.9612 |"
        in table
    )
    assert "| label parent | 12.00 |  | 100 |  | 91.6 | 90.9 | 1 | 1 |" in table


def test_the_section_replaces_only_its_own(tmp_path: Path) -> None:
    section = bench.render_section(results(tmp_path))
    assert section.startswith(bench.SECTION_HEADING + "\n")
    assert "2 threads each" in section
    assert "load average before the run 0.50" in section
    assert "256 sentences" in section  # the quality set
    document = "# Benchmarks\n\n## Other\n\nkept\n"
    updated = replace_section(replace_section(document, section), section)
    assert updated.count(bench.SECTION_HEADING) == 1
    assert "kept" in updated
