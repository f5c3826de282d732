"""An optimization job's run on a worker: the method builds the new version's files, the
runner measures them against the parent and hands the folder to `jobs.publish`.

The measuring is the same for every method (`optimize.measure`): quality against the
parent's own outputs (or on the job's evaluation file), p50 latency at batch 1, throughput at
batch 32, size on disk, all with both models loaded through their serving runtimes on the
same threads.

Example::

    output = run_optimization(kind, context)  # what OptimizationJobKind.run does
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING

from openmaas.errors import InvalidRequest, NotFound
from openmaas.jobs.context import JobContext, job_caller
from openmaas.jobs.publish import JobOutput
from openmaas.optimize.measure import (
    BUILTIN_TEXTS,
    QUALITY_PREFIX,
    compare_outputs,
    measure_speed,
    size_metrics,
)
from openmaas.optimize.methods import BuildContext, Built, resident_bytes
from openmaas.optimize.registry import get_method
from openmaas.registry.entities import VersionPin
from openmaas.registry.files import OpenedVersion
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, get_runtime

if TYPE_CHECKING:
    from openmaas.optimize.kind import OptimizationJobKind
    from openmaas.training.recipe import Example

# `lineage.source.type` of what an optimization job registers (no ONNX variant is built of it).
SOURCE_TYPE = "optimization-job"


def run_optimization(kind: OptimizationJobKind, context: JobContext) -> JobOutput:
    job = context.job
    method = get_method(job.recipe)
    settings = dict(job.hyperparameters)
    output_dir, work_dir = context.scratch / "output", context.scratch / "work"
    for directory in (output_dir, work_dir):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    parent = _open_parent(kind, context)
    vectors = _open_embeddings(kind, context)
    threads = _measuring_threads(context, parent.version.runtime)
    build = BuildContext(
        job=context,
        parent=parent,
        settings=settings,
        work_dir=work_dir,
        output_dir=output_dir,
        options=LoadOptions(device="cpu", threads=threads),
        read_examples=lambda which: _examples(kind, context, which),
        embeddings=vectors,
    )
    try:
        built = method.build(build)
        build.check_stop("after building the new version")
        metrics = {**built.metrics, **_measure(build, built, threads)}
    finally:
        if "parent_model" in build.__dict__:
            build.parent_model.unload()
        parent.close()
        if vectors is not None:
            vectors.close()
    version = parent.version
    reference = f"{version.model}:{version.version}"
    return JobOutput(
        directory=output_dir,
        task=version.task,
        runtime=built.runtime,
        description=f"{reference} optimized by job {job.id} ({method.name})",
        params={
            **built.params,
            "optimization": {"job_id": job.id, "method": method.name, "settings": settings},
        },
        metrics=metrics,
        source={
            "type": SOURCE_TYPE,
            "job_id": job.id,
            "parent": reference,
            "method": method.name,
            "settings": settings,
        },
        base_version=reference,
        transform=method.name,
    )


def load_built(build: BuildContext, built: Built) -> LoadedModel:
    """The new version's files as its runtime will serve them."""
    version = build.version
    source = ModelSource.for_directory(
        build.output_dir,
        task=version.task,
        runtime=built.runtime,
        name=f"{version.model}-optimized",
        params=built.params,
    )
    return get_runtime(built.runtime).load(source, build.options)


def _measure(build: BuildContext, built: Built, threads: int | None) -> dict[str, float]:
    task = build.version.task
    parent = build.parent_model
    before = resident_bytes()
    child = load_built(build, built)
    after = resident_bytes()
    try:
        metrics = dict(compare_outputs(parent, child, task, BUILTIN_TEXTS).metrics)
        if before is not None and after is not None and build.parent_resident is not None:
            # What loading each added to the worker's memory (freed memory the allocator
            # reuses can make the second one read low: a rough, not an exact, figure).
            metrics["resident_mb"] = max(after - before, 0) / 1e6
            metrics["parent_resident_mb"] = build.parent_resident / 1e6
        examples = build.read_examples("eval")
        if examples:
            build.message(f"Scoring both on the evaluation file ({len(examples)} examples)")
            metrics.update(eval_quality(build.parent_model, child, task, examples))
        build.check_stop("before measuring speed")
        build.message("Measuring latency and throughput against the parent")
        metrics.update(measure_speed(build.parent_model, child, task, BUILTIN_TEXTS))
        metrics["measured_threads"] = float(threads or os.cpu_count() or 1)
        metrics.update(size_metrics(build.parent.directory, build.output_dir))
        build.message(
            "Measured: "
            + ", ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))
        )
        return metrics
    finally:
        child.unload()


# The evaluation report's metrics an optimization records for both models, and their delta.
EVAL_METRICS = ("accuracy", "macro_f1", "entity_f1", "entity_precision", "entity_recall")
EVAL_TEXTS = 512  # an embedding model's cosine is measured on at most this many texts


def eval_quality(
    parent: LoadedModel, child: LoadedModel, task: str, examples: Sequence[Example]
) -> dict[str, float]:
    """Quality on the job's evaluation file: accuracy and macro F1 (classifiers), entity F1
    (taggers), each for the new version (`eval_<metric>`), the parent
    (`parent_eval_<metric>`) and their difference (`eval_<metric>_delta`); for embeddings
    the mean and least cosine to the parent's vectors over the file's texts."""
    if task == "embedding":
        texts = [str(e["text"]) for e in examples if isinstance(e.get("text"), str)][:EVAL_TEXTS]
        quality = compare_outputs(parent, child, task, texts).metrics
        return {name.replace(QUALITY_PREFIX, "eval_", 1): value for name, value in quality.items()}
    from openmaas.evaluation import EVALUATED_TASKS, score

    if task not in EVALUATED_TASKS:
        return {}
    ours, theirs = score(child, task, examples).metrics, score(parent, task, examples).metrics
    metrics: dict[str, float] = {}
    for name in EVAL_METRICS:
        if name in ours and name in theirs:
            metrics[f"eval_{name}"] = ours[name]
            metrics[f"parent_eval_{name}"] = theirs[name]
            metrics[f"eval_{name}_delta"] = ours[name] - theirs[name]
    return metrics


def _examples(kind: OptimizationJobKind, context: JobContext, which: str) -> Sequence[Example]:
    """The examples of the job's training or evaluation file, as its project reads them."""
    job = context.job
    file_id = job.training_file if which == "training" else job.validation_file
    if not file_id or kind.datasets is None:
        return ()
    _, examples = kind.datasets.load(file_id, caller=job_caller(job))
    return examples


def _measuring_threads(context: JobContext, parent_runtime: str) -> int | None:
    """One thread count for both engines: the worker's (`training_threads`), else what torch
    runs the parent on. Left to each library, onnxruntime would take every core while torch
    kept the worker's threads, and the speed-up would be partly the extra cores'."""
    if context.threads is not None or parent_runtime == "onnx":
        return context.threads  # an ONNX parent: both on onnxruntime's default
    import torch

    return int(torch.get_num_threads())


def _open_parent(kind: OptimizationJobKind, context: JobContext) -> OpenedVersion:
    job = context.job
    try:
        return kind.registry.open_pinned(
            VersionPin.from_dict(dict(job.options["base_version_pin"])), caller=job_caller(job)
        )
    except NotFound:
        raise InvalidRequest(
            f"the model {job.options.get('base_version')} this job was created with is gone "
            f"or no longer visible to project {job.project!r}; create a new job",
            param="model",
            code="base_model_gone",
        ) from None


def _open_embeddings(kind: OptimizationJobKind, context: JobContext) -> OpenedVersion | None:
    """The word vectors `settings.embeddings` pinned when the job was created, if any."""
    job = context.job
    pin = job.options.get("embeddings_version_pin")
    if not isinstance(pin, dict):
        return None
    try:
        return kind.registry.open_pinned(VersionPin.from_dict(dict(pin)), caller=job_caller(job))
    except NotFound:
        raise InvalidRequest(
            f"the embeddings {job.hyperparameters.get('embeddings')} this job was created with "
            f"are gone or no longer visible to project {job.project!r}; create a new job",
            param="settings.embeddings",
            code="embeddings_gone",
        ) from None
