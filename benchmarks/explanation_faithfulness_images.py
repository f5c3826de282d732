"""Image explanations, measured: are the regions an explanation ranks highest the ones the
model needs?

On Fashion-MNIST test images (Debian `dataset-fashion-mnist`), a `cnn` trained by the
platform's recipe (`benchmarks.image_classification`'s split, its defaults but the training
images and epochs) explains each image's predicted label with integrated gradients and with
occlusion (the server's own code: `tasks.image_explanation`, run on the loaded model as a
`/v1/explain` request runs it), on a grid of `GRID` x `GRID` regions. Then the k = 1..5
regions each method ranks highest toward the label are blacked out (as occlusion fills
them), and so are k regions drawn at random (`RANDOM_DRAWS` draws per image and k); the
curve is the mean drop in the predicted label's probability against k (the deletion test of
Samek et al. 2017). A faithful method's curve lies above the random one; the area between
them is the sum over k = 1..5 of the two curves' difference.

Occlusion scores a region by the probability lost when it alone is blacked out, which is
what the k = 1 point measures: its lead there is by construction.

Example::

    python benchmarks/explanation_faithfulness_images.py           # writes docs/benchmarks.md
    python benchmarks/explanation_faithfulness_images.py --quick   # minutes; writes nothing
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import fashion_mnist
from benchmarks.markdown_sections import DOCS_PATH, describe_environment, write_section
from benchmarks.recipe_runs import train_recipe

SECTION_HEADING = "## Explanations: faithfulness on Fashion-MNIST"
TASK = "image-classification"
SEED = 0
THREADS = 2
KS = (1, 2, 3, 4, 5)
RANDOM_DRAWS = 5  # random blackouts per image and k
STEPS = 32  # integrated gradients' steps: the server's default (OPENMAAS_EXPLAIN_STEPS)
GRID = 7  # regions a side: 4 x 4 pixels of a 28 x 28 image
METHODS = ("integrated-gradients", "occlusion")


@dataclass(frozen=True, slots=True)
class Plan:
    train_images: int
    validation_images: int
    epochs: int
    test_images: int

    @classmethod
    def default(cls) -> Plan:
        return cls(train_images=20_000, validation_images=2_000, epochs=3, test_images=500)

    @classmethod
    def quick(cls) -> Plan:
        return cls(train_images=2_000, validation_images=500, epochs=1, test_images=30)


@dataclass(frozen=True, slots=True)
class Curves:
    accuracy: float  # on the measured test images, as served
    images: int
    drops: dict[str, list[float]]  # method or "random" -> mean probability drop per k
    seconds: dict[str, float]  # method -> mean seconds per explanation
    deltas: list[float]  # integrated gradients' approximation errors

    def area(self, method: str) -> float:
        return sum(m - r for m, r in zip(self.drops[method], self.drops["random"], strict=True))


def examples(images: Any, labels: Any) -> list[dict[str, str]]:
    return [
        {
            "image": base64.b64encode(fashion_mnist.png(image)).decode("ascii"),
            "label": fashion_mnist.CLASSES[int(label)],
        }
        for image, label in zip(images, labels, strict=True)
    ]


def measure(model: Any, test: Sequence[dict[str, str]], *, steps: int, grid: int) -> Curves:
    """Explain every test image with both methods, then black out regions and rescore."""
    from openmaas.tasks.image_explanation import IMAGE_EXPLANATION, ImageExplainParams
    from openmaas.tasks.image_explanation_runner import explain_image
    from openmaas.tasks.image_regions import grid_regions, occluded

    rng = random.Random(SEED)
    sums = {key: [0.0] * len(KS) for key in (*METHODS, "random")}
    seconds = dict.fromkeys(METHODS, 0.0)
    deltas: list[float] = []
    correct = 0
    for index, example in enumerate(test):
        data = base64.b64decode(example["image"])
        orders: dict[str, list[int]] = {}
        for method in METHODS:
            params = ImageExplainParams(method=method, grid=(grid, grid), steps=steps)
            item = IMAGE_EXPLANATION.check(model, [data], params, "cnn")
            started = time.perf_counter()
            explanation = explain_image(model, item)
            seconds[method] += time.perf_counter() - started
            if explanation.delta is not None:
                deltas.append(explanation.delta)
            scores = [r.score for r in explanation.regions]
            orders[method] = sorted(range(len(scores)), key=lambda i: -scores[i])
        pixels, label, full = item.pixels, explanation.label, explanation.score
        correct += label == example["label"]
        height, width = pixels.shape[:2]
        regions = grid_regions(height=height, width=width, rows=grid, cols=grid)
        blacked: list[tuple[str, int, list[int]]] = [
            (method, k, order[:k]) for method, order in orders.items() for k in KS
        ]
        for k in KS:
            blacked += [
                ("random", k, rng.sample(range(len(regions)), k)) for _ in range(RANDOM_DRAWS)
            ]
        images = []
        for _, _, gone in blacked:
            image = pixels
            for i in gone:
                image = occluded(image, regions[i])
            images.append(image)
        for (key, k, _), ranking in zip(blacked, model.classify_images(images), strict=True):
            score = next(s.score for s in ranking if s.label == label)
            share = 1 / RANDOM_DRAWS if key == "random" else 1.0
            sums[key][KS.index(k)] += (full - score) * share
        if (index + 1) % 100 == 0:
            print(f"  {index + 1}/{len(test)} images", flush=True)
    count = max(1, len(test))
    return Curves(
        accuracy=correct / count,
        images=len(test),
        drops={key: [total / count for total in totals] for key, totals in sums.items()},
        seconds={method: total / count for method, total in seconds.items()},
        deltas=deltas,
    )


def render_section(curves: Curves, plan: Plan, grid: int, steps: int, minutes: float) -> str:
    rows = [
        "| method | " + " | ".join(f"k={k}" for k in KS) + " | area over random | s per image |",
        "|---|" + "---|" * len(KS) + "---|---|",
    ]
    for key in (*METHODS, "random"):
        drops = " | ".join(f"{d:.3f}" for d in curves.drops[key])
        area = f"{curves.area(key):+.3f}" if key != "random" else ""
        speed = f"{curves.seconds[key]:.3f}" if key != "random" else ""
        rows.append(f"| {key} | {drops} | {area} | {speed} |")
    median_delta = statistics.median(curves.deltas) if curves.deltas else float("nan")
    return (
        f"{SECTION_HEADING}\n\n"
        "Mean drop in the predicted label's probability when the k regions an explanation "
        "ranks highest toward it are blacked out, against k regions blacked out at random "
        f"({RANDOM_DRAWS} draws per image and k), on the first {curves.images} Fashion-MNIST "
        f"test images, a grid of {grid} x {grid} regions; the `cnn` recipe on its defaults "
        f"but {plan.epochs} epochs over {plan.train_images:,} training images (accuracy "
        f"{curves.accuracy:.3f} on the measured images). Integrated gradients with {steps} "
        f"steps (median approximation error {median_delta:.4f}). Wall time {minutes:.1f} min; "
        + describe_environment(["torch", "captum"], THREADS)
        + ". Command: `python benchmarks/explanation_faithfulness_images.py`.\n\n"
        + "\n".join(rows)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets; writes nothing")
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help="Markdown to update")
    parser.add_argument("--grid", type=int, default=GRID, help="regions a side")
    parser.add_argument("--steps", type=int, default=STEPS, help="integrated gradients' steps")
    args = parser.parse_args()
    if not fashion_mnist.available():
        raise SystemExit("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist")

    import torch

    from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime

    torch.set_num_threads(THREADS)
    plan = Plan.quick() if args.quick else Plan.default()
    started = time.perf_counter()
    train_images, train_labels = fashion_mnist.read_split("train")
    test_images, test_labels = fashion_mnist.read_split("test")
    order = np.random.default_rng(SEED).permutation(len(train_images))
    validation_ids = order[: plan.validation_images]
    train_ids = order[plan.validation_images : plan.validation_images + plan.train_images]
    test = examples(test_images[: plan.test_images], test_labels[: plan.test_images])
    with tempfile.TemporaryDirectory(prefix="openmaas-explain-images-") as root:
        run = train_recipe(
            "cnn",
            TASK,
            examples(train_images[train_ids], train_labels[train_ids]),
            examples(train_images[validation_ids], train_labels[validation_ids]),
            test,
            {"n_epochs": plan.epochs},
            root=Path(root),
            seed=SEED,
            epoch_metric="val_accuracy",
        )
        print(f"cnn: trained in {run.seconds:.0f} s ({run.notes})", flush=True)
        source = ModelSource.for_directory(run.output_dir, task=TASK, runtime="openmaas-vision")
        model = get_runtime("openmaas-vision").load(source, LoadOptions(threads=THREADS))
        curves = measure(model, test, steps=args.steps, grid=args.grid)
    minutes = (time.perf_counter() - started) / 60
    section = render_section(curves, plan, args.grid, args.steps, minutes)
    print(f"\n(load average {os.getloadavg()[0]:.1f})\n")
    print(section)
    if not args.quick:
        write_section(args.output, section)
        print(f"wrote the {SECTION_HEADING!r} section of {args.output}")


if __name__ == "__main__":
    main()
