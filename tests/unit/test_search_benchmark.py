"""benchmarks/search_quality.py's reading of SST-2 and its report (the run itself needs a
server and an hour: it is a benchmark, not a test)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.search_quality import SECTION, Outcome, markdown, read_sst2


def test_sst2_rows_become_labelled_examples(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text('sentence\tlabel\na "quoted" gem \t1\ndull\t0\n', encoding="utf-8")
    assert read_sst2(path) == [
        {"text": 'a "quoted" gem ', "label": "positive"},
        {"text": "dull", "label": "negative"},
    ]


def test_the_report_shows_both_runs_and_whether_the_targets_were_met() -> None:
    outcomes = [
        Outcome("defaults", 0.80, 0.85, None, 120.0, {}),
        Outcome(
            "search, 20 trials", 0.81, 0.86, 0.87, 900.0, {"complete": 12, "pruned": 8, "failed": 0}
        ),
    ]
    text = markdown(outcomes, 20_000, 20, {"as_good": True, "pruned": True})
    assert text.startswith(f"## {SECTION}\n")
    assert "| search, 20 trials | 0.8100 | 0.8600 | 0.8700 | 12 / 8 / 0 | 15.0 min |" in text
    assert "| defaults | 0.8000 | 0.8500 | - | - | 2.0 min |" in text
    assert text.count(": met") == 2
