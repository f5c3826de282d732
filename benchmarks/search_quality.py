"""Hyperparameter search on SST-2: does a 20-trial search job find settings at least as good
as the recipe's defaults, and does its pruning stop at least a third of the trials early?

Runs a real server (`openmaas serve`, one worker on `THREADS` torch threads, a temporary
home) and, through the SDK, as a user would: uploads SST-2's `train.tsv` (or its first
`--train-examples` rows, shuffled from seed 0) and `dev.tsv`, trains `textcnn` on its
defaults (one training job), runs a search job over the recipe's default space with the
same seed and epochs, and scores both registered models on `dev.tsv` with evaluation jobs.
Both jobs hold out the same validation and test splits of the training file: the search
picks its best trial on the validation split; dev is never seen by either.

It prints a table (dev and test accuracy, the searched validation macro F1, trials complete
/ pruned / failed, wall time) and whether both targets were met; `--write` also rewrites the
"Training: hyperparameter search" section of `docs/benchmarks.md`.

Usage::

    .venv/bin/python benchmarks/search_quality.py                      # 20 trials, ~1 h on 2 cores
    .venv/bin/python benchmarks/search_quality.py --train-examples 67349 --write
    .venv/bin/python benchmarks/search_quality.py --quick              # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from openmaas import Client
from openmaas.auth.keys import generate_key

try:  # imported as `benchmarks.search_quality` (the tests)
    from benchmarks.markdown_sections import DOCS_PATH, describe_environment, write_section
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    from markdown_sections import (  # type: ignore[import-not-found,no-redef]
        DOCS_PATH,
        describe_environment,
        write_section,
    )

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
RECIPE = "textcnn"
SEED = 0
SECTION = "Training: hyperparameter search"
LABELS = {"0": "negative", "1": "positive"}
STARTUP_S = 120.0
JOB_TIMEOUT_S = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    dev_accuracy: float
    test_accuracy: float
    val_macro_f1: float | None
    seconds: float
    trials: dict[str, int]


def sst2_directory() -> Path:
    """`shared/datasets/sst2` beside the checkout or a directory above it (as the tests look)."""
    given = os.environ.get("OPENMAAS_SHARED_DATASETS")
    if given:
        return Path(given) / "sst2"
    for parent in ROOT.parents:
        candidate = parent / "shared" / "datasets" / "sst2"
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "datasets" / "sst2"


def read_sst2(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [{"text": text, "label": LABELS[label]} for text, label in rows]


def write_jsonl(path: Path, examples: Sequence[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    return path


@contextmanager
def running_server(home: Path) -> Iterator[tuple[str, str]]:
    """`openmaas serve` on a free port with one training worker; (url, admin key)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = generate_key().plaintext
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OPENMAAS_HOME": str(home),
        "OPENMAAS_ADMIN_KEY": key,
        "OPENMAAS_CATALOG_AUTOREGISTER": "false",
        "OPENMAAS_AUTO_ONNX": "false",
        "OPENMAAS_WORKERS": "1",
        "OPENMAAS_TRAINING_THREADS": str(THREADS),
        "OPENMAAS_LOG_LEVEL": "warning",
    }
    env.pop("OPENMAAS_API_KEY", None)
    log = (home.parent / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "openmaas.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {home.parent / 'server.log'}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, key
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def dev_accuracy(client: Client, model: str, dev_file: str) -> float:
    evaluation = client.create_evaluation(model, dev_file)
    evaluation = client.wait_for_evaluation(evaluation.id, timeout_s=JOB_TIMEOUT_S)
    if evaluation.status != "succeeded":
        raise RuntimeError(f"evaluation of {model} {evaluation.status}: {evaluation.error}")
    return float(evaluation.metrics["accuracy"])


def run(
    train: Sequence[dict[str, str]],
    dev: Sequence[dict[str, str]],
    *,
    trials: int,
    hyperparameters: dict[str, Any],
    work: Path,
) -> list[Outcome]:
    train_path = write_jsonl(work / "train.jsonl", train)
    dev_path = write_jsonl(work / "dev.jsonl", dev)
    outcomes = []
    with running_server(work / "home") as (url, key), Client(url, api_key=key) as client:
        train_file = client.upload_dataset(train_path).id
        dev_file = client.upload_dataset(dev_path).id

        started = time.monotonic()
        job = client.create_training_job(
            RECIPE, train_file, hyperparameters=hyperparameters, seed=SEED
        )
        job = client.wait_for_training_job(job.id, timeout_s=JOB_TIMEOUT_S)
        if job.status != "succeeded" or job.fine_tuned_model is None:
            raise RuntimeError(f"the defaults' job {job.status}: {job.error}")
        seconds = time.monotonic() - started
        outcomes.append(
            Outcome(
                "defaults",
                dev_accuracy(client, job.fine_tuned_model, dev_file),
                job.metrics["accuracy"],
                None,
                seconds,
                {},
            )
        )
        print(f"defaults: {outcomes[-1]}", flush=True)

        started = time.monotonic()
        job = client.create_search_job(
            RECIPE, train_file, n_trials=trials, hyperparameters=hyperparameters, seed=SEED
        )
        job = client.wait_for_training_job(job.id, timeout_s=JOB_TIMEOUT_S)
        if job.status != "succeeded" or job.fine_tuned_model is None:
            raise RuntimeError(f"the search job {job.status}: {job.error}")
        seconds = time.monotonic() - started
        rows = client.training_job_trials(job.id)
        states = {state: sum(r.state == state for r in rows) for state in ("complete", "pruned")}
        states["failed"] = len(rows) - sum(states.values())
        for row in rows:
            print(f"  trial {row.number:2d} {row.state:8s} {row.value} {row.params}", flush=True)
        outcomes.append(
            Outcome(
                f"search, {trials} trials",
                dev_accuracy(client, job.fine_tuned_model, dev_file),
                job.metrics["accuracy"],
                job.metrics.get("val_macro_f1"),
                seconds,
                states,
            )
        )
        print(f"search: {outcomes[-1]}", flush=True)
    return outcomes


def markdown(outcomes: Sequence[Outcome], n_train: int, trials: int, met: dict[str, bool]) -> str:
    lines = [
        f"## {SECTION}",
        "",
        f"`benchmarks/search_quality.py`, {datetime.now(UTC):%Y-%m-%d}: `{RECIPE}` on SST-2 "
        f"({n_train:,} rows of `train.tsv`, 80/10/10 train/validation/test from seed {SEED}), "
        f"scored on `dev.tsv` (872 sentences) by evaluation jobs; one worker, "
        f"{describe_environment(['torch', 'optuna'], THREADS)}.",
        "",
        "| run | dev accuracy | test accuracy | val macro F1 (best trial) | trials "
        "(complete / pruned / failed) | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        counts = (
            f"{o.trials['complete']} / {o.trials['pruned']} / {o.trials['failed']}"
            if o.trials
            else "-"
        )
        val = f"{o.val_macro_f1:.4f}" if o.val_macro_f1 is not None else "-"
        lines.append(
            f"| {o.name} | {o.dev_accuracy:.4f} | {o.test_accuracy:.4f} | {val} | {counts} "
            f"| {o.seconds / 60:.1f} min |"
        )
    lines += [
        "",
        f"Targets: the search at least as good as the defaults on dev: "
        f"{'met' if met['as_good'] else 'NOT met'}; pruning stopped at least a third of the "
        f"{trials} trials: {'met' if met['pruned'] else 'NOT met'}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--train-examples", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=None, help="Default: the recipe's.")
    parser.add_argument("--data", type=Path, default=None, help="The sst2 directory.")
    parser.add_argument("--quick", action="store_true", help="2,000 rows, 4 trials, no writing.")
    parser.add_argument("--write", action="store_true", help=f"Rewrite {DOCS_PATH.name}.")
    args = parser.parse_args(argv)
    data = args.data or sst2_directory()
    train = read_sst2(data / "train.tsv")
    random.Random(SEED).shuffle(train)
    dev = read_sst2(data / "dev.tsv")
    trials, n_train = args.trials, args.train_examples
    hyperparameters: dict[str, Any] = {}
    if args.quick:
        trials, n_train = 4, 2000
        hyperparameters = {"n_epochs": 2}
    if args.epochs is not None:
        hyperparameters["n_epochs"] = args.epochs
    train = train[:n_train]
    with tempfile.TemporaryDirectory() as directory:
        outcomes = run(
            train, dev, trials=trials, hyperparameters=hyperparameters, work=Path(directory)
        )
    defaults, searched = outcomes
    met = {
        "as_good": searched.dev_accuracy >= defaults.dev_accuracy,
        "pruned": searched.trials.get("pruned", 0) * 3 >= trials,
    }
    text = markdown(outcomes, len(train), trials, met)
    print(text)
    if args.write and not args.quick:
        write_section(DOCS_PATH, text)


if __name__ == "__main__":
    main()
