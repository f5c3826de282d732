"""The ONNX methods: `onnx` exports a transformers encoder, classifier or tagger, or one of
the platform's own networks (`openmaas-nn`), to an ONNX graph (checked against its parent);
`quantize` makes that graph's weights int8 (or an ONNX parent's).

For a transformers or ONNX parent, the output folder is what the ONNX runtime loads:
`model.onnx` (one file, weights inside), the parent's tokenizer files and `config.json`
(labels, position limit), and `sentence_bert_config.json` when the parent has one (its input
limit). The version's params carry the pooling and normalization the parent applied, so both
embed alike.

For an `openmaas-nn` parent, the output folder is what the `openmaas-nn` runtime loads:
`model.onnx`, the parent's `tokenizer.json` and its `openmaas.json` marked as a graph
(`openmaas.nn.graph`); the new version keeps the `openmaas-nn` runtime. Its int8 is
onnxruntime's dynamic quantization of the exported graph, not torch's `quantize_dynamic`:
stored as a graph it needs no pickle, and it served fastest (measured on 2 cores, 1 thread,
batch 32 of 24 tokens, 20k-word vocabulary: BiLSTM 2.9 ms fp32 graph, 1.5 ms int8 graph,
5.8 ms torch int8, 11 ms torch fp32; torch's quantized Transformer encoder does not run at
all), and the int8 embedding table (most of the bytes) makes the files ~3.5x smaller.

Example::

    fp32, params = fp32_graph(parent, work_dir, output_dir)
    finish_graph("quantize", fp32, output_dir, {"per_channel": True})
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.errors import OptimizationFailed
from openmaas.optimize.graphs import (
    CALIBRATIONS,
    QuantizeSettings,
    export_transformer,
    quantize_graph,
    quantize_graph_static,
)
from openmaas.optimize.measure import BUILTIN_TEXTS, compare_outputs
from openmaas.optimize.methods import BuildContext, Built, Method, boolean, choice, number
from openmaas.registry.entities import ModelVersion
from openmaas.registry.files import OpenedVersion
from openmaas.runtimes.base import NATIVE_SPEC, LoadedModel, LoadOptions, ModelSource, get_runtime

if TYPE_CHECKING:
    from openmaas.training.recipe import Example

ONNX = "onnx"
QUANTIZE = "quantize"
GRAPH = "model.onnx"
TASKS = frozenset({"embedding", "text-classification", "token-classification"})
WEIGHT_TYPES = ("qint8", "quint8")
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
MODES = ("dynamic", "static")
CALIBRATION_TEXTS = 512  # the most texts of the job's file that static calibration runs
NETWORKS = "openmaas-nn"  # the platform's own networks: their graphs keep their runtime
NETWORK_PARAMS = ("max_input_tokens", "labels", "architecture")
# The openmaas-nn architectures whose export is faithful (`nn_graphs.ARCHITECTURES`), by
# name here so that the API process checks requests without importing torch.
NETWORK_ARCHITECTURES = frozenset({"textcnn", "rnn", "transformer-encoder", "rnn-tagger"})


def build_onnx(context: BuildContext) -> Built:
    fp32, built = _export(context)
    finish_graph(ONNX, fp32, context.output_dir, context.settings)
    metrics = _check_export(context, context.output_dir / GRAPH, built)
    return Built(built.runtime, built.params, metrics)


def build_quantized(context: BuildContext) -> Built:
    fp32, built = _export(context)
    metrics = _check_export(context, fp32, built)
    if context.settings.get("mode") == "static":
        _quantize_static(context, fp32, built)
        return Built(built.runtime, built.params, metrics)
    context.message("Quantizing the graph's weights to int8")
    operators: tuple[str, ...] = ("MatMul",)
    if built.runtime == NETWORKS:
        from openmaas.optimize.nn_graphs import QUANTIZED_OPERATORS as operators
    finish_graph(QUANTIZE, fp32, context.output_dir, context.settings, operators=operators)
    return Built(built.runtime, built.params, metrics)


def _quantize_static(context: BuildContext, fp32: Path, built: Built) -> None:
    """Static int8, calibrated on the texts of the job's training file (else its eval file)."""
    texts = calibration_texts(context.read_examples("training") or context.read_examples("eval"))
    if not texts:
        raise OptimizationFailed(
            "static quantization calibrates on texts: the job's training_file or eval_file "
            "holds none"
        )
    settings = context.settings
    context.message(
        f"Calibrating activations on {len(texts)} texts ({settings['calibration']}), "
        "then quantizing to static int8"
    )
    if built.runtime == NETWORKS:
        from openmaas.optimize.nn_graphs import STATIC_OPERATORS, calibration_feeds

        feeds = list(calibration_feeds(context.output_dir, texts))
        operators: tuple[str, ...] = STATIC_OPERATORS
    else:
        from openmaas.runtimes.onnx import OnnxModel

        graph_model = load_onnx(
            _fp32_directory(context, fp32), context.version, built.params, context.options
        )
        try:
            assert isinstance(graph_model, OnnxModel)
            feeds = list(graph_model.input_batches(texts))
        finally:
            graph_model.unload()
        operators = ("MatMul",)
    context.check_stop("after calibrating")
    quantize_graph_static(
        fp32, context.output_dir / GRAPH, feeds, _quantize_settings(settings, operators)
    )


def calibration_texts(examples: Sequence[Example]) -> list[str]:
    """The texts of a file's examples: `text`, or a tagged sentence's tokens joined."""
    texts = []
    for example in examples[:CALIBRATION_TEXTS]:
        text = example.get("text")
        tokens = example.get("tokens")
        if isinstance(text, str) and text:
            texts.append(text)
        elif isinstance(tokens, list) and tokens:
            texts.append(" ".join(str(token) for token in tokens))
    return texts


def finish_graph(
    method: str,
    fp32: Path,
    output_dir: Path,
    settings: Mapping[str, Any],
    *,
    operators: tuple[str, ...] = ("MatMul",),
) -> None:
    """The method's graph in `output_dir`: the fp32 graph itself (`onnx`), or its dynamic
    int8 quantization of `operators` (`quantize`)."""
    if method == ONNX:
        shutil.copy(fp32, output_dir / GRAPH)
    else:
        quantize_graph(fp32, output_dir / GRAPH, _quantize_settings(settings, operators))


def _export(context: BuildContext) -> tuple[Path, Built]:
    """The parent's fp32 graph and what serves it (runtime, params), support files copied."""
    if context.version.runtime == NETWORKS:
        context.message("Exporting the network to ONNX")
        fp32 = network_graph(context.parent.directory, context.work_dir, context.output_dir)
        params = {k: v for k, v in context.version.params.items() if k in NETWORK_PARAMS}
        runtime = NETWORKS
    else:
        fp32, params = fp32_graph(context.parent, context.work_dir, context.output_dir)
        runtime = "onnx"
    context.check_stop("after the export")
    return fp32, Built(runtime, params)


def network_graph(parent: Path, work_dir: Path, output_dir: Path) -> Path:
    """The `openmaas-nn` network saved in `parent` as an fp32 graph in `work_dir`, with its
    tokenizer and its spec (marked as a graph) in `output_dir`."""
    # Imported here: the API process lists and checks methods without loading torch.
    from openmaas.nn.graph import graph_spec
    from openmaas.nn.saved import TOKENIZER_FILE
    from openmaas.optimize.nn_graphs import export_network

    graph = work_dir / GRAPH
    min_length = export_network(parent, graph)
    spec = json.loads((parent / NATIVE_SPEC).read_text(encoding="utf-8"))
    (output_dir / NATIVE_SPEC).write_text(
        json.dumps(graph_spec(spec, min_length=min_length), indent=2) + "\n", encoding="utf-8"
    )
    shutil.copy(parent / TOKENIZER_FILE, output_dir / TOKENIZER_FILE)
    return graph


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


def load_onnx(
    directory: Path,
    version: ModelVersion,
    params: Mapping[str, Any],
    options: LoadOptions,
    *,
    runtime: str = "onnx",
) -> LoadedModel:
    source = ModelSource.for_directory(
        directory,
        task=version.task,
        runtime=runtime,
        name=f"{version.model}-optimized",
        params=params,
    )
    return get_runtime(runtime).load(source, options)


def _check_export(context: BuildContext, graph: Path, built: Built) -> dict[str, float]:
    """The export must serve like the parent (optimum's check): for `onnx` the result is the
    export; for `quantize` the fp32 graph it started from. An ONNX parent is its own graph."""
    version = context.version
    if version.runtime == "onnx":
        return {}
    directory = _fp32_directory(context, graph)
    exported = load_onnx(directory, version, built.params, context.options, runtime=built.runtime)
    try:
        check = compare_outputs(context.parent_model, exported, version.task, BUILTIN_TEXTS)
    finally:
        exported.unload()
    atol = float(context.settings["atol"])
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
    return {"export_max_abs_difference": check.max_abs_difference}


def exportable(version: ModelVersion) -> bool:
    """A network of an architecture the export handles (a recipe records it in the version's
    params; an uploaded directory's is checked when the job runs)."""
    if version.runtime != NETWORKS:
        return True
    architecture = version.params.get("architecture")
    return architecture is None or architecture in NETWORK_ARCHITECTURES


def _fp32_directory(context: BuildContext, graph: Path) -> Path:
    """The output folder's support files with the fp32 `graph`: what serves the export."""
    directory = context.work_dir / "fp32"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(context.output_dir, directory)
    shutil.copy(graph, directory / GRAPH)
    return directory


def _onnx_graph(directory: Path) -> Path:
    if (directory / GRAPH).is_file():
        return directory / GRAPH
    graphs = sorted(directory.rglob("*.onnx"))
    if len(graphs) != 1:
        raise OptimizationFailed(f"the parent holds {len(graphs)} .onnx files; expected one")
    return graphs[0]


def _quantize_settings(
    settings: Mapping[str, Any], operators: tuple[str, ...] = ("MatMul",)
) -> QuantizeSettings:
    return QuantizeSettings(
        per_channel=bool(settings.get("per_channel", True)),
        weight_type=str(settings.get("weight_type", "qint8")),
        reduce_range=bool(settings.get("reduce_range", False)),
        operators=operators,
        calibration=str(settings.get("calibration", "minmax")),
    )


# Largest element-wise difference to the parent's outputs (embedding values or class
# probabilities) that the export may show; optimum's default for BERT-like models. The
# quantized result is measured, not held to a tolerance: the caller decides from the metrics.
_ATOL = number("atol", 0, 1, low_open=True)

METHODS = (
    Method(
        name=ONNX,
        summary="export to an ONNX graph with graph optimization, checked against the parent",
        defaults={"atol": 1e-4},
        runtimes=frozenset({"transformers", NETWORKS}),
        tasks=TASKS,
        suffix="onnx",
        build=build_onnx,
        checks=(_ATOL,),
        applies=exportable,
    ),
    Method(
        name=QUANTIZE,
        summary="int8 (onnxruntime): dynamic, or static calibrated on the job's file; from "
        "the exported or the parent's graph",
        defaults={
            "atol": 1e-4,
            "per_channel": True,
            "weight_type": "qint8",
            "reduce_range": False,
            "mode": "dynamic",
            "calibration": "minmax",
        },
        runtimes=frozenset({"transformers", "onnx", NETWORKS}),
        tasks=TASKS,
        suffix="int8",
        build=build_quantized,
        checks=(
            _ATOL,
            boolean("per_channel", "reduce_range"),
            choice("weight_type", WEIGHT_TYPES),
            choice("mode", MODES),
            choice("calibration", CALIBRATIONS),
        ),
        needs_examples=lambda settings: settings.get("mode") == "static",
        applies=exportable,
    ),
)
