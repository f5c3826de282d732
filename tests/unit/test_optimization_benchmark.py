"""The optimization benchmark: its report (medians over rounds, ratios per round, the
issue's targets judged) and the classifier part run end to end on a tiny BERT."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from benchmarks import optimization as bench
from benchmarks import optimization_classifier as classifier
from benchmarks.embeddings_serving import QuietGate
from benchmarks.markdown_sections import replace_section

from openmaas.optimize.registry import METHODS
from tests.runtimes.tiny_models import build_bert


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


# -- the classifier part ----------------------------------------------------------------------

POSITIVE = ("a joy", "loved it", "wonderful acting", "a delight", "great fun", "moving")
NEGATIVE = ("a bore", "hated it", "wooden acting", "a mess", "no fun", "tedious")


def write_sst2(directory: Path, train_rows: int, dev_rows: int) -> Path:
    """A folder shaped like GLUE SST-2: `sentence<TAB>label`, a space before the tab."""
    directory.mkdir(parents=True)
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        lines = ["sentence\tlabel"]
        for i in range(rows):
            words, label = (POSITIVE, 1) if i % 2 == 0 else (NEGATIVE, 0)
            lines.append(f"{words[i % len(words)]} , take {i} \t{label}")
        (directory / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


TINY_PLAN = classifier.ClassifierPlan(
    train_examples=40,
    validation_examples=10,
    epochs=1,
    max_length=16,
    prune_fine_tune_examples=20,
    prune_fine_tune_epochs=1,
    distill_examples=40,
    truncate_to=3,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[classifier.ClassifierResults, Path]:
    """The whole classifier part on a 4-layer, 32-wide BERT and a 60-row SST-2 look-alike."""
    root = tmp_path_factory.mktemp("classifier-part")
    base = build_bert(root / "base", layers=4)
    data = classifier.read_sst2(write_sst2(root / "sst2", train_rows=60, dev_rows=24))
    results = classifier.run_classifier(
        TINY_PLAN,
        data,
        root / "cache",
        root / "work",
        base=base,
        base_name="tiny-bert",
        threads=1,
        rounds=2,
        gate=QuietGate(0.0),
    )
    return results, root


def test_sst2_is_read_with_its_labels_named(tmp_path: Path) -> None:
    data = classifier.read_sst2(write_sst2(tmp_path / "sst2", train_rows=4, dev_rows=2))
    assert data.train[0] == {"text": "a joy , take 0", "label": "positive"}
    assert data.dev[1] == {"text": "hated it , take 1", "label": "negative"}
    train, validation = classifier.training_subsets(
        data.train, replace(TINY_PLAN, train_examples=3, validation_examples=1)
    )
    assert sorted(e["text"] for e in train + validation) == sorted(e["text"] for e in data.train)


def test_every_method_is_built_loaded_scored_and_timed_beside_the_parent(
    tiny_run: tuple[classifier.ClassifierResults, Path],
) -> None:
    results, _root = tiny_run
    keys = [variant.key for variant in results.variants]
    assert keys == [v.key for v in classifier.variants(TINY_PLAN)]
    built = [key for key in keys if results.present[key]]
    # Every method main has is built; distill fills in once it lands.
    assert set(keys) - set(built) <= {"distill-textcnn"}
    assert set(built) >= {"onnx", "int8-dynamic", "int8-static", "prune-structured", "truncate"}
    assert results.present["distill-textcnn"] == ("distill" in METHODS)
    assert set(results.quality) == {"parent", *built}
    assert all(0.0 <= q.accuracy <= 1.0 for q in results.quality.values())
    assert [set(measured) for measured in results.rounds] == [set(built)] * 2
    # The structured prune halved the feed-forward block (with a fine-tune on its file),
    # truncate_layers kept 3 of 4 layers: their sizes show it, the int8 graph is smaller still.
    sizes = results.sizes
    assert sizes["truncate"] < sizes["parent"]
    assert sizes["prune-structured"] < sizes["parent"]
    assert sizes["int8-dynamic"] < sizes["onnx"]
    assert results.parent.dev_accuracy == pytest.approx(results.quality["parent"].accuracy)


def test_the_fine_tuned_parent_is_cached_by_its_plan(
    tiny_run: tuple[classifier.ClassifierResults, Path],
) -> None:
    results, root = tiny_run
    assert not results.parent.cached
    data = classifier.read_sst2(root / "sst2")
    again = classifier.fine_tuned_parent(
        root / "base", data, TINY_PLAN, root / "cache", base_name="tiny-bert"
    )
    assert again.cached
    assert again.directory == results.parent.directory
    assert again.dev_accuracy == results.parent.dev_accuracy
    other = replace(TINY_PLAN, epochs=2)
    assert other.cache_key("tiny-bert") != TINY_PLAN.cache_key("tiny-bert")


def test_the_classifier_section_has_every_row_and_the_targets(
    tiny_run: tuple[classifier.ClassifierResults, Path],
) -> None:
    results, _ = tiny_run
    section = classifier.render_section(results, "2 CPUs", "python benchmarks/optimization.py")
    assert section.startswith(classifier.SECTION_HEADING + "\n")
    for variant in results.variants:
        assert f"| {variant.label}" in section
    for target in classifier.TARGETS:
        assert target.text in section
    assert ("TODO" in section) == (not results.present["distill-textcnn"])
    document = replace_section("# Benchmarks\n\n## Other\n\nkept\n", section)
    assert replace_section(document, section).count(classifier.SECTION_HEADING) == 1


def pair(
    child_p50: float, child_rate: float, parent_p50: float = 10.0, parent_rate: float = 100.0
) -> classifier.Pair:
    return classifier.Pair(
        parent_p50,
        child_p50,
        parent_rate,
        child_rate,
        parent_p50 / child_p50,
        child_rate / parent_rate,
    )


def test_targets_are_judged_on_the_median_ratio_and_accuracy_points(tmp_path: Path) -> None:
    plan = TINY_PLAN
    parent = classifier.Parent(tmp_path, {}, 0.9, 60.0, "1 epoch", cached=True)
    quality = classifier.Quality
    results = classifier.ClassifierResults(
        plan=plan,
        parent=parent,
        variants=classifier.variants(plan),
        present={v.key: v.key != "distill-textcnn" for v in classifier.variants(plan)},
        rounds=[
            {
                "onnx": pair(8, 120),
                "int8-dynamic": pair(4, 250),
                "int8-static": pair(5, 190),
                "prune-structured": pair(7, 150),
                "prune-heads": pair(9, 110),
                "truncate": pair(5, 200),
            },
            {
                "onnx": pair(8, 125),
                "int8-dynamic": pair(4, 210),
                "int8-static": pair(5, 230),
                "prune-structured": pair(7, 130),
                "prune-heads": pair(9, 115),
                "truncate": pair(5, 200),
            },
            {
                "onnx": pair(8, 130),
                "int8-dynamic": pair(3, 90),
                "int8-static": pair(5, 170),
                "prune-structured": pair(7, 135),
                "prune-heads": pair(9, 120),
                "truncate": pair(5, 200),
            },
        ],
        quality={
            "parent": quality(0.90, 0.90),
            "onnx": quality(0.90, 0.90),
            "int8-dynamic": quality(0.895, 0.89),
            "int8-static": quality(0.87, 0.87),
            "prune-structured": quality(0.89, 0.89),
            "prune-heads": quality(0.885, 0.88),
            "truncate": quality(0.80, 0.79),
        },
        sizes={
            "parent": 90_000_000,
            "onnx": 90_000_000,
            "int8-dynamic": 30_000_000,
            "int8-static": 30_000_000,
            "prune-structured": 70_000_000,
            "prune-heads": 84_000_000,
            "truncate": 60_000_000,
        },
        build_seconds={"onnx": 10.0},
        dev_count=872,
        threads=2,
        load_before=(3.5, 3.0, 2.9),
        gate_waited_s=120.0,
        seconds=600.0,
        measured_at=datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
    )
    # Throughput ratios per round 2.5, 2.1, 0.9: the median 2.1; 0.5 points lost.
    assert results.child_speed("int8-dynamic")[3] == pytest.approx(2.1)
    targets = {target.name: target for target in classifier.TARGETS}
    assert classifier.verdict(results, targets["int8"], "int8-dynamic").startswith("**met**")
    static = classifier.verdict(results, targets["int8"], "int8-static")
    assert "not met" in static
    assert "accuracy -3.0 points" in static
    assert "throughput 1.35x < 1.4x" in classifier.verdict(
        results, targets["prune"], "prune-structured"
    )
    assert "not measured" in classifier.verdict(results, targets["distill"], "distill-textcnn")
    table = classifier.render_table(results)
    assert (
        "| `prune` heads 50%, 1-epoch distilled fine-tune | 84.0 | 9.00 | 1.11x faster |" in table
    )
    assert "| PyTorch fp32 (parent) | 90.0 | 10.00 |  | 100 |  | 0.9000 |  | 0.9000 |  |" in table
    assert (
        "| `truncate_layers` to 3 | 60.0 | 5.00 | 2.00x faster | 200 | 2.00x | 0.8000 | -10.0 |"
        in table
    )
    assert "load average before the part 3.50" in classifier.render_section(results, "2 CPUs", "x")
