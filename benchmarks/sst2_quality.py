"""Training quality on SST-2, the `--dataset sst2` mode of `training_quality.py`: TextCNN as
Kim (2014) trained it, beside a TF-IDF baseline and the paper's figures.

GLUE SST-2 (`../shared/datasets/sst2`, see its README): the models train on `train.tsv`'s
67,349 phrases less a seeded 10% held out as the validation split early stopping watches,
and are scored on `dev.tsv`'s 872 sentences. Runs:

- TF-IDF + logistic regression (the baseline of the other datasets);
- `textcnn` on its defaults, no vectors: Kim's CNN-rand (82.7% in the paper);
- `word2vec` trained by the platform on the same training phrases (300 dimensions, Kim's
  width), then `textcnn` with `embeddings` on those vectors, `non-static`: CNN-non-static
  (87.2% in the paper, with word2vec vectors trained on 100 billion words of Google News).

The two TextCNN branches (CNN-rand; word2vec then CNN-non-static) run side by side in two
processes of one torch thread each, which is how two cores are best used on a shared
machine (two threads in one process wait on each other when the machine is oversubscribed).
Times are each branch's own wall seconds. The recipes run through `RECIPES[name].train`, as
a job runs them.

Usage::

    .venv/bin/python benchmarks/training_quality.py --dataset sst2
    .venv/bin/python benchmarks/training_quality.py --dataset sst2 --quick  # smoke, no write
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:  # imported as `benchmarks.sst2_quality` (the tests)
    from benchmarks.markdown_sections import DOCS_PATH, describe_environment, write_section
    from benchmarks.recipe_runs import train_recipe
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    from markdown_sections import (  # type: ignore[import-not-found,no-redef]
        DOCS_PATH,
        describe_environment,
        write_section,
    )
    from recipe_runs import train_recipe  # type: ignore[import-not-found,no-redef]

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET_DIR = REPO_ROOT.parent / "shared" / "datasets" / "sst2"
HEADING = "## Training: SST-2 (Kim 2014)"
SEED = 0
VALIDATION_SHARE = 0.1
LABELS = {"0": "negative", "1": "positive"}
WORD2VEC: dict[str, Any] = {
    "vector_size": 300,  # Kim's (the GoogleNews vectors' width)
    "min_count": 1,  # every training word gets a vector
    "n_epochs": 10,
    "analogy_vocab_size": 0,  # a sentiment corpus answers few analogy questions
}
QUICK_TRAIN, QUICK_VALIDATION = 2000, 300  # examples, for a smoke run
QUICK_TEXTCNN: dict[str, Any] = {"n_epochs": 2}
QUICK_WORD2VEC_EPOCHS = 2
PUBLISHED = {  # Kim (2014), Table 2, SST-2
    "cnn_rand": "82.7%",
    "cnn_static": "86.8%",
    "cnn_non_static": "87.2%",
}


@dataclass(frozen=True, slots=True)
class Sst2Run:
    name: str
    label: str
    accuracy: float
    macro_f1: float
    seconds: float
    notes: str
    published: str = ""


def read_split(directory: Path, name: str) -> list[dict[str, str]]:
    """A `sentence<TAB>label` file (no quoting) as examples."""
    path = directory / name
    if not path.is_file():
        raise SystemExit(f"no {path}: SST-2 is expected in ../shared/datasets/sst2")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        return [{"text": row[0].strip(), "label": LABELS[row[1]]} for row in rows]


def splits(directory: Path, quick: bool) -> tuple[list[Any], list[Any], list[Any]]:
    """(train, validation, dev): the training phrases less a seeded validation share."""
    phrases = read_split(directory, "train.tsv")
    random.Random(SEED).shuffle(phrases)
    held = round(len(phrases) * VALIDATION_SHARE)
    train, validation = phrases[held:], phrases[:held]
    if quick:
        train, validation = train[:QUICK_TRAIN], validation[:QUICK_VALIDATION]
    return train, validation, read_split(directory, "dev.tsv")


def run_baseline(train: list[Any], dev: list[Any]) -> Sst2Run:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform([e["text"] for e in train])
    classifier = LogisticRegression(C=10.0, max_iter=1000)
    classifier.fit(features, [e["label"] for e in train])
    predicted = classifier.predict(vectorizer.transform([e["text"] for e in dev]))
    truth = [e["label"] for e in dev]
    return Sst2Run(
        name="tfidf_logreg",
        label="TF-IDF + logistic regression (baseline)",
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(f1_score(truth, predicted, average="macro")),
        seconds=time.perf_counter() - started,
        notes="word 1-2-grams (min_df 2, sublinear tf), C=10",
    )


def textcnn_run(
    name: str,
    label: str,
    data: tuple[list[Any], list[Any], list[Any]],
    hyperparameters: dict[str, Any],
    root: Path,
    *,
    embeddings: Path | None = None,
    published: str = "",
) -> Sst2Run:
    train, validation, dev = data
    run = train_recipe(
        "textcnn",
        "text-classification",
        train,
        validation,
        dev,
        hyperparameters,
        root=root / name,
        seed=SEED,
        epoch_metric="val_accuracy",
        embeddings=embeddings,
        label=name,
    )
    metrics = run.result.metrics
    notes = run.notes
    if "embeddings_coverage" in metrics:
        notes += f"; vectors cover {metrics['embeddings_coverage']:.1%} of the vocabulary"
    return Sst2Run(
        name, label, metrics["accuracy"], metrics["macro_f1"], run.seconds, notes, published
    )


def rand_branch(directory: Path, quick: bool) -> list[Sst2Run]:
    """The baseline, then CNN-rand."""
    import torch

    torch.set_num_threads(1)
    data = splits(directory, quick)
    hp = dict(QUICK_TEXTCNN) if quick else {}
    with tempfile.TemporaryDirectory(prefix="openmaas-sst2-") as root:
        results = [run_baseline(data[0], data[2])]
        print(f"baseline: {results[0].accuracy:.4f} in {results[0].seconds:.0f} s", flush=True)
        results.append(
            textcnn_run(
                "cnn_rand",
                "TextCNN CNN-rand (random vectors), defaults",
                data,
                hp,
                Path(root),
                published=PUBLISHED["cnn_rand"],
            )
        )
    return results


def vectors_branch(directory: Path, quick: bool) -> list[Sst2Run]:
    """word2vec on the training phrases, then CNN-non-static on those vectors."""
    import torch

    torch.set_num_threads(1)
    data = splits(directory, quick)
    hp = dict(QUICK_TEXTCNN) if quick else {}
    word2vec = dict(WORD2VEC)
    if quick:
        word2vec["n_epochs"] = QUICK_WORD2VEC_EPOCHS
    with tempfile.TemporaryDirectory(prefix="openmaas-sst2-") as tmp:
        root = Path(tmp)
        texts = [{"text": e["text"]} for e in data[0]]
        vectors = train_recipe(
            "word2vec", "embedding", texts, [], texts[:1000], word2vec,
            root=root / "word2vec", seed=SEED, epoch_metric="train_loss",
        )  # fmt: skip
        given = ", ".join(f"{k}={v}" for k, v in word2vec.items())
        trained = Sst2Run(
            "word2vec",
            "word2vec (skip-gram) on the training phrases",
            float("nan"),
            float("nan"),
            vectors.seconds,
            f"{given}; feeds the row below",
        )
        print(f"word2vec: {vectors.seconds:.0f} s", flush=True)
        non_static = textcnn_run(
            "cnn_non_static",
            "TextCNN CNN-non-static (those vectors, trained on), defaults",
            data,
            {**hp, "embeddings": "sst2-word2vec", "embeddings_mode": "non-static"},
            root,
            embeddings=vectors.output_dir,
            published=PUBLISHED["cnn_non_static"],
        )
    return [trained, non_static]


def render(results: list[Sst2Run], data_sizes: tuple[int, int, int], minutes: float,
           load: tuple[float, float]) -> str:  # fmt: skip
    train, validation, dev = data_sizes
    environment = describe_environment(("torch", "gensim", "scikit-learn"), 1)
    lines = [
        HEADING,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python benchmarks/"
        f"training_quality.py --dataset sst2` ({minutes:.1f} minutes) on {environment} (two "
        f"branches side by side, one thread each). 1-minute load average {load[0]:.1f} before "
        f"the run and {load[1]:.1f} after it (the machine is shared: wall times are upper "
        "bounds).",
        "",
        f"GLUE SST-2: trained on {train:,} of `train.tsv`'s phrases (the other {validation:,}, "
        f"a seeded 10%, are the validation split early stopping watches), scored on the "
        f"{dev:,} `dev.tsv` sentences (one sentence is {100 / dev:.2f} pts). TextCNN runs on "
        "its defaults, Kim's: widths 3/4/5 x 100 maps, 300-d embeddings, dropout 0.5, "
        "max-norm 3, Adadelta, batches of 50, up to 25 epochs with early stopping (patience "
        "3) on validation accuracy.",
        "",
        "| Model | Dev accuracy | Macro F1 | Kim (2014) | Wall time (s) | Notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        scored = r.accuracy == r.accuracy  # NaN for the word2vec step
        accuracy = f"{r.accuracy:.3f}" if scored else ""
        f1 = f"{r.macro_f1:.3f}" if scored else ""
        lines.append(
            f"| {r.label} | {accuracy} | {f1} | {r.published} | {r.seconds:.0f} | {r.notes} |"
        )
    lines += [
        "",
        "Kim's figures are on SST-2's test set; the GLUE dev set here holds other sentences of "
        "the same treebank. His CNN-non-static starts from vectors trained on 100 billion "
        "words; the vectors here are trained on the 60,000 training phrases (about 0.6 million "
        "words), so the gain they bring is the platform's, not the paper's.",
    ]
    return "\n".join(lines) + "\n"


def main_sst2(quick: bool, directory: Path = DATASET_DIR) -> None:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        rand = pool.submit(rand_branch, directory, quick)
        vectors = pool.submit(vectors_branch, directory, quick)
        results = [*rand.result(), *vectors.result()]
    minutes = (time.perf_counter() - started) / 60
    data = splits(directory, quick)
    section = render(
        results,
        (len(data[0]), len(data[1]), len(data[2])),
        minutes,
        (load_before, os.getloadavg()[0]),
    )
    print()
    print(section)
    if not quick:
        write_section(DOCS_PATH, section)
        print(f"wrote the {HEADING!r} section of {DOCS_PATH}")
