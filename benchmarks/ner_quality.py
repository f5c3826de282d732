"""NER quality: CoNLL-2003 dev entity F1 and wall time of the token-classification recipes,
MiniLM-L6 fine-tuned (`finetune_transformer_ner`) and the BiLSTM tagger trained from scratch
(`bilstm_tagger`), beside a baseline that gives each word its most frequent training tag.

The shared CoNLL-2003 files are read as a training job reads them (`open_dataset`: IOB1 tags
converted to BIO). The training file is shuffled with seed 0; its first 500 sentences are the
validation split the recipes stop early on, and each recipe trains on the next ones, as many
as its budget names. The whole dev file (3,250 sentences, `eng.testa`) is the test split, so
the registered metrics are dev figures: exact-match entity precision, recall and F1 (conlleval
rules) and token accuracy. "Served F1" is the saved model loaded by its runtime, sent the dev
sentences as text (words joined by spaces) through `extract_entities`, its entities matched by
character span and type: what `/v1/ner` answers, subword grouping included.

The recipes run in this process through `RECIPES[name].train`, as a job would, on
`--threads` torch threads (default 2, for a quiet 2-core machine; with other processes
running, pass 1: there 2 threads trained the BiLSTM 4 to 6 times slower than 1 and MiniLM 2
times slower, OpenMP's workers spinning against the other load); times are wall seconds
from the start of `train` to its result (vocabulary, training, validation each epoch, the
dev evaluation, writing the model).

It prints the tables, rewrites its section of docs/benchmarks.md ("## NER training"; not with
`--quick`) and writes the raw figures as JSON under `--output` (default benchmarks/results/).

Usage::

    .venv/bin/python benchmarks/ner_quality.py           # about 12 minutes on 2 quiet cores
    .venv/bin/python benchmarks/ner_quality.py --quick   # smoke run, a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

try:  # imported as `benchmarks.ner_quality`
    from benchmarks.markdown_sections import DOCS_PATH, write_section
    from benchmarks.recipe_runs import train_recipe
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    from markdown_sections import (  # type: ignore[import-not-found,no-redef]
        DOCS_PATH,
        write_section,
    )
    from recipe_runs import train_recipe  # type: ignore[import-not-found,no-redef]

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / "shared" / "datasets" / "conll2003"
OUTPUT = REPO_ROOT / "benchmarks" / "results"
THREADS = 2  # see the module docstring
SEED = 0
VALIDATION_SENTENCES = 500
TYPES = ("PER", "LOC", "ORG", "MISC")

# Each recipe's hyperparameters over its defaults, and how many training sentences it sees.
# Both see every training sentence: the BiLSTM 5 times (about 750 sentences a second on 2
# quiet threads), MiniLM twice (about 50 a second), with a higher rate than its defaults: on 600
# sentences, one epoch at 5e-5 found no entity, at 1.5e-4 dev F1 0.23; on 1,800 for two
# epochs at 1e-4, dev F1 0.82.
BUDGET: dict[str, dict[str, Any]] = {
    "bilstm_tagger": {"hyperparameters": {"n_epochs": 5}, "train_sentences": 13_541},
    "finetune_transformer_ner": {
        "hyperparameters": {"n_epochs": 2, "batch_size": 16, "learning_rate": 1e-4},
        "train_sentences": 13_541,
    },
}
QUICK_BUDGET: dict[str, dict[str, Any]] = {
    "bilstm_tagger": {"hyperparameters": {"n_epochs": 2}, "train_sentences": 500},
    "finetune_transformer_ner": {"hyperparameters": {"n_epochs": 1}, "train_sentences": 100},
}
SCALE = (
    "For scale: Devlin et al. (2019) report 0.964 dev F1 for BERT-base (110M parameters) "
    "fine-tuned on the full training set (14,041 sentences, with document context); MiniLM-L6 "
    "has 22.7M and reads each sentence alone. Served F1 is below dev F1 where `/v1/ner` "
    'splits text into words differently from the CoNLL tokenization ("U.S." becomes four '
    "words), which `label_all_subwords` (on by default) keeps whole."
)
LABELS = {
    "most_frequent_tag": "each word's most frequent training tag (baseline)",
    "bilstm_tagger": "BiLSTM tagger over words and casing, from scratch",
    "finetune_transformer_ner": "fine-tuned MiniLM-L6",
}

Example = dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Splits:
    train: list[Example]  # shuffled; recipes take a prefix
    validation: list[Example]
    dev: list[Example]


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    train_sentences: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    seconds: float
    served_f1: float | None = None
    per_type_f1: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)


def read_conll(path: Path) -> list[Example]:
    """The file's sentences as a job sees them (BIO tags)."""
    from openmaas.datasets.validate import open_dataset

    with path.open("rb") as stream:
        return [
            dict(example) for example in open_dataset(stream, filename=path.name, format="conll")
        ]


def load_splits(seed: int = SEED) -> Splits:
    train = read_conll(DATA / "train.txt")
    random.Random(seed).shuffle(train)
    dev = read_conll(DATA / "dev.txt")
    return Splits(train[VALIDATION_SENTENCES:], train[:VALIDATION_SENTENCES], dev)


def run_baseline(splits: Splits) -> Measurement:
    from openmaas.training.ner_metrics import entity_metrics

    started = time.perf_counter()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for example in splits.train:
        for word, tag in zip(example["tokens"], example["tags"], strict=True):
            counts[word][tag] += 1
    best = {word: tags.most_common(1)[0][0] for word, tags in counts.items()}
    predicted = [[best.get(word, "O") for word in e["tokens"]] for e in splits.dev]
    metrics = entity_metrics([e["tags"] for e in splits.dev], predicted)
    return Measurement(
        name="most_frequent_tag",
        train_sentences=len(splits.train),
        precision=metrics.precision,
        recall=metrics.recall,
        f1=metrics.f1,
        accuracy=metrics.accuracy,
        seconds=time.perf_counter() - started,
        per_type_f1={t.label: t.f1 for t in metrics.per_type},
        notes="unseen words O; broken tag sequences read as conlleval reads them",
    )


def served_f1(directory: Path, task: str, runtime: str, examples: Sequence[Example]) -> float:
    """Entity F1 of the model as served, on the examples' words joined by spaces."""
    from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
    from openmaas.training.ner_metrics import entity_spans
    from openmaas.training.recipes.bilstm_tagger import words_text

    model = get_runtime(runtime).load(
        ModelSource.for_directory(directory, task=task, runtime=runtime), LoadOptions()
    )
    try:
        right = found = expected = 0
        for start in range(0, len(examples), 256):
            chunk = examples[start : start + 256]
            joined = [words_text(e["tokens"]) for e in chunk]
            served = model.extract_entities([text for text, _ in joined])
            for (_, spans), entities, example in zip(joined, served, chunk, strict=True):
                true = {
                    (spans[s.start][0], spans[s.end - 1][1], s.label)
                    for s in entity_spans(example["tags"])
                }
                got = {(e.start, e.end, e.label) for e in entities}
                right += len(true & got)
                found += len(got)
                expected += len(true)
    finally:
        model.unload()
    precision, recall = right / max(1, found), right / max(1, expected)
    return 2 * precision * recall / (precision + recall) if right else 0.0


def run_recipe(name: str, splits: Splits, budget: Mapping[str, Any], root: Path) -> Measurement:
    train = splits.train[: budget["train_sentences"]]
    run = train_recipe(
        name,
        "token-classification",
        train,
        splits.validation,
        splits.dev,
        budget["hyperparameters"],
        root=root,
        seed=SEED,
        epoch_metric="val_f1",
    )
    result = run.result
    return Measurement(
        name=name,
        train_sentences=len(train),
        precision=result.metrics["precision"],
        recall=result.metrics["recall"],
        f1=result.metrics["f1"],
        accuracy=result.metrics["accuracy"],
        seconds=run.seconds,
        served_f1=served_f1(run.output_dir, result.task, result.runtime, splits.dev),
        per_type_f1={t["label"]: t["f1"] for t in result.report["per_type"]},
        notes=run.notes,
        hyperparameters=dict(budget["hyperparameters"]),
    )


def render(
    results: Sequence[Measurement],
    splits: Splits,
    minutes: float,
    load: tuple[float, float],
    threads: int,
) -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "transformers"))
    lines = [
        "## NER training",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python benchmarks/ner_quality.py` "
        f"({minutes:.1f} minutes) on {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{versions}; torch threads {threads}. 1-minute load average {load[0]:.1f} before the "
        f"run and {load[1]:.1f} after it (the machine is shared: wall times are upper bounds).",
        "",
        f"CoNLL-2003 English: trained on the first sentences of the shuffled training file "
        f"(seed 0; {len(splits.train):,} available), early stopping on the {len(splits.validation)}"
        f" held out before them, scored on the whole dev file ({len(splits.dev):,} sentences). "
        "Entity F1 is exact span and type (conlleval); served F1 is what `/v1/ner` returns for "
        "the dev sentences sent as text.",
        "",
        "| Model | Recipe | Train sentences | Dev precision | Dev recall | Dev F1 | Served F1 "
        "| Token accuracy | Wall time (s) | Budget |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        recipe = f"`{r.name}`" if r.name in BUDGET else "-"
        given = ", ".join(f"{k}={v}" for k, v in r.hyperparameters.items())
        budget = "; ".join(part for part in (given or "defaults", r.notes) if part)
        if r.name not in BUDGET:
            budget = r.notes
        served = f"{r.served_f1:.3f}" if r.served_f1 is not None else "-"
        lines.append(
            f"| {LABELS[r.name]} | {recipe} | {r.train_sentences:,} | {r.precision:.3f} | "
            f"{r.recall:.3f} | {r.f1:.3f} | {served} | {r.accuracy:.3f} | {r.seconds:.0f} | "
            f"{budget} |"
        )
    lines += ["", "| Model | " + " | ".join(TYPES) + " |", "|---|" + "---:|" * len(TYPES)]
    for r in results:
        cells = " | ".join(f"{r.per_type_f1.get(t, 0.0):.3f}" for t in TYPES)
        lines.append(f"| {LABELS[r.name]} | {cells} |")
    lines += ["", SCALE]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, dev cut to 300")
    parser.add_argument("--only", nargs="*", default=None, help="recipes to run")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where the tables go")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(args.threads)
    # The base model loads without a token-classification head, as it should.
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    splits = load_splits()
    budgets = QUICK_BUDGET if args.quick else BUDGET
    if args.quick:
        splits = Splits(splits.train, splits.validation[:100], splits.dev[:300])
    results = [run_baseline(splits)]
    print(f"baseline: dev F1 {results[0].f1:.3f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="openmaas-ner-bench-") as root:
        for name, budget in budgets.items():
            if args.only is not None and name not in args.only:
                continue
            result = run_recipe(name, splits, budget, Path(root))
            results.append(result)
            print(
                f"{name}: dev F1 {result.f1:.3f}, served F1 {result.served_f1:.3f} "
                f"in {result.seconds:.0f} s",
                flush=True,
            )
    minutes = (time.perf_counter() - started) / 60
    section = render(results, splits, minutes, (load_before, os.getloadavg()[0]), args.threads)
    print()
    print(section)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = "ner_quality_quick" if args.quick else "ner_quality"
    (args.output / f"{stem}.md").write_text(section, encoding="utf-8")
    (args.output / f"{stem}.json").write_text(
        json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8"
    )
    print(f"wrote {args.output / stem}.md and .json")
    if not args.quick:
        write_section(DOCS_PATH, section)
        print(f"rewrote its section of {DOCS_PATH}")


if __name__ == "__main__":
    main()
