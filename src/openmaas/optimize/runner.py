"""An optimization job's run on a worker: build the graph, check it against the parent,
measure both, and hand the directory to `jobs.publish` as a new version.

The output directory is what the ONNX runtime loads: `model.onnx` (one file, weights
inside), the parent's tokenizer files and `config.json` (labels, position limit), and
`sentence_bert_config.json` when the parent has one (its input limit). The version's params
carry the pooling and normalization the parent applied, so both embed alike.

Example::

    output = run_optimization(kind, context)  # what OptimizationJobKind.run does
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.errors import InvalidRequest, NotFound, OptimizationFailed
from openmaas.jobs.context import JobContext, JobStopped, job_caller
from openmaas.jobs.publish import JobOutput
from openmaas.optimize.graphs import QuantizeSettings, export_transformer, quantize_graph
from openmaas.optimize.measure import BUILTIN_TEXTS, compare_outputs, measure_speed, size_metrics
from openmaas.optimize.requests import ONNX
from openmaas.registry.entities import ModelVersion, VersionPin
from openmaas.registry.files import OpenedVersion
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, get_runtime

if TYPE_CHECKING:
    from openmaas.optimize.kind import OptimizationJobKind

GRAPH = "model.onnx"
# Files of a transformers checkpoint the ONNX runtime reads beside the graph.
SUPPORT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
)
PASSED_PARAMS = ("max_input_tokens", "labels", "pooling", "normalize", "output")


def run_optimization(kind: OptimizationJobKind, context: JobContext) -> JobOutput:
    job = context.job
    method = job.recipe
    settings = dict(job.hyperparameters)
    output_dir, work_dir = context.scratch / "output", context.scratch / "work"
    for directory in (output_dir, work_dir):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    parent = _open_parent(kind, context)
    try:
        version = parent.version
        fp32, params = fp32_graph(parent, work_dir, output_dir)
        _check_stop(context, "after the export")
        if method != ONNX:
            context.message("Quantizing the graph's weight matrices to int8")
        finish_graph(method, fp32, output_dir, settings)
        _check_stop(context, "after building the graph")
        metrics = _measure(context, parent, fp32, output_dir, params, settings)
    finally:
        parent.close()
    reference = f"{version.model}:{version.version}"
    return JobOutput(
        directory=output_dir,
        task=version.task,
        runtime="onnx",
        description=f"{reference} optimized by job {job.id} ({method})",
        params={
            **params,
            "optimization": {"job_id": job.id, "method": method, "settings": settings},
        },
        metrics=metrics,
        source={
            "type": "optimization-job",
            "job_id": job.id,
            "parent": reference,
            "method": method,
            "settings": settings,
        },
        base_version=reference,
        transform=method,
    )


def finish_graph(method: str, fp32: Path, output_dir: Path, settings: Mapping[str, Any]) -> None:
    """The method's graph in `output_dir`: the fp32 graph itself (`onnx`), or its dynamic
    int8 quantization (`quantize`)."""
    if method == ONNX:
        shutil.copy(fp32, output_dir / GRAPH)
    else:
        quantize_graph(fp32, output_dir / GRAPH, _quantize_settings(settings))


def fp32_graph(
    parent: OpenedVersion, work_dir: Path, output_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """The parent as an fp32 graph (exported, or its own), with the output's support files
    copied and the version params the ONNX runtime needs (`benchmarks/optimization.py`
    builds its graphs with this and `finish_graph`, as a job does)."""
    version = parent.version
    params = {k: v for k, v in version.params.items() if k in PASSED_PARAMS}
    source = ModelSource.from_version(version, parent.directory)
    if version.runtime == "onnx":
        graph = _onnx_graph(parent.directory)
        for path in parent.directory.rglob("*"):
            if path.is_file() and path.suffix != ".onnx" and path.name != "openmaas.json":
                target = output_dir / path.relative_to(parent.directory)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        return graph, params
    from openmaas.runtimes.transformers_encoders import EmbeddingModel, Pooling, TextClassifier

    if version.task == "embedding":
        checkpoint = EmbeddingModel.checkpoint_directory(source)
        pooling = Pooling.for_source(source)
        params["pooling"] = pooling.mode
        if pooling.normalize:
            params["normalize"] = "l2"
        else:
            params.pop("normalize", None)
        # sentence-transformers' input limit, often below the architecture's.
        if (parent.directory / "sentence_bert_config.json").is_file():
            shutil.copy(parent.directory / "sentence_bert_config.json", output_dir)
    else:
        checkpoint = TextClassifier.checkpoint_directory(source)
    for name in SUPPORT_FILES:
        if (checkpoint / name).is_file():
            shutil.copy(checkpoint / name, output_dir / name)
    graph = work_dir / GRAPH
    export_transformer(checkpoint, version.task, graph)
    return graph, params


def _measure(
    context: JobContext,
    parent: OpenedVersion,
    fp32: Path,
    output_dir: Path,
    params: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, float]:
    version = parent.version
    task = version.task
    threads = _measuring_threads(context, version.runtime)
    options = LoadOptions(device="cpu", threads=threads)
    parent_model = get_runtime(version.runtime).load(
        ModelSource.from_version(version, parent.directory), options
    )
    child = load_onnx(output_dir, version, params, options)
    try:
        metrics: dict[str, float] = {}
        if version.runtime != "onnx":
            # The export itself must serve like the parent (optimum's check): for `onnx`
            # the result is the export; for `quantize` the fp32 graph it started from.
            exported = (
                child
                if context.job.recipe == ONNX
                else _load_onnx_graph(fp32, output_dir, version, params, options)
            )
            check = compare_outputs(parent_model, exported, task, BUILTIN_TEXTS)
            atol = float(settings["atol"])
            metrics["export_max_abs_difference"] = check.max_abs_difference
            if not check.max_abs_difference <= atol:
                raise OptimizationFailed(
                    f"the exported graph's outputs differ from {version.model}:{version.version}'s "
                    f"by up to {check.max_abs_difference:.3g}, above the tolerance atol={atol:g}; "
                    "nothing was registered"
                )
            context.message(
                f"Export validated: outputs within {check.max_abs_difference:.2g} of the parent's "
                f"(atol {atol:g})"
            )
        quality = compare_outputs(parent_model, child, task, BUILTIN_TEXTS)
        metrics.update(quality.metrics)
        _check_stop(context, "before measuring speed")
        context.message("Measuring latency and throughput against the parent")
        metrics.update(measure_speed(parent_model, child, task, BUILTIN_TEXTS))
        metrics["measured_threads"] = float(threads or os.cpu_count() or 1)
        metrics.update(size_metrics(parent.directory, output_dir))
        context.message(
            "Measured: "
            + ", ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))
        )
        return metrics
    finally:
        parent_model.unload()
        child.unload()


def load_onnx(
    directory: Path, version: ModelVersion, params: Mapping[str, Any], options: LoadOptions
) -> LoadedModel:
    source = ModelSource.for_directory(
        directory,
        task=version.task,
        runtime="onnx",
        name=f"{version.model}-optimized",
        params=params,
    )
    return get_runtime("onnx").load(source, options)


def _load_onnx_graph(
    graph: Path,
    output_dir: Path,
    version: ModelVersion,
    params: Mapping[str, Any],
    options: LoadOptions,
) -> LoadedModel:
    """The fp32 graph with the output's tokenizer and config (in a directory of its own)."""
    directory = graph.parent / "fp32"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(output_dir, directory)
    shutil.copy(graph, directory / GRAPH)
    return load_onnx(directory, version, params, options)


def _onnx_graph(directory: Path) -> Path:
    if (directory / GRAPH).is_file():
        return directory / GRAPH
    graphs = sorted(directory.rglob("*.onnx"))
    if len(graphs) != 1:
        raise OptimizationFailed(f"the parent holds {len(graphs)} .onnx files; expected one")
    return graphs[0]


def _measuring_threads(context: JobContext, parent_runtime: str) -> int | None:
    """One thread count for both engines: the worker's (`training_threads`), else what torch
    runs the parent on. Left to each library, onnxruntime would take every core while torch
    kept the worker's threads, and the speed-up would be partly the extra cores'."""
    if context.threads is not None or parent_runtime == "onnx":
        return context.threads  # an ONNX parent: both on onnxruntime's default
    import torch

    return int(torch.get_num_threads())


def _quantize_settings(settings: Mapping[str, Any]) -> QuantizeSettings:
    return QuantizeSettings(
        per_channel=bool(settings.get("per_channel", True)),
        weight_type=str(settings.get("weight_type", "qint8")),
        reduce_range=bool(settings.get("reduce_range", False)),
    )


def _check_stop(context: JobContext, where: str) -> None:
    if context.should_stop():
        raise JobStopped(f"stopped {where}")


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
