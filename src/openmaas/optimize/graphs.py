"""ONNX graphs from transformers checkpoints, and their int8 quantization: dynamic (weights
only) or static (activations too, calibrated on example inputs).

The export traces the network with torch's exporter (`dynamo=True`: the TorchScript one
silently mis-traces recent transformers' attention masks), then saves the graph after
onnxruntime's *basic* optimizations (constant folding, redundant node removal): they are
portable across machines, and the ONNX runtime applies the hardware-specific ones when it
loads the graph. Quantization replaces the weight matrices of `MatMul`s by int8
(`MatMulInteger`), keeping activation-by-activation products (attention scores) in fp32,
where int8 costs the most accuracy for the least speed.

Static quantization (optimum's calibration step, done apart from the quantizing) runs the fp32
graph on batches of real inputs to find each quantized activation's range (MinMax, or a
Percentile of its histogram, which ignores outliers), then writes QDQ pairs around the same
operators: per-channel int8 weights, uint8 activations with fixed scales, so no range is
computed per batch at run time.

Example::

    export_transformer(checkpoint, "embedding", scratch / "model.onnx")
    quantize_graph(scratch / "model.onnx", output / "model.onnx", QuantizeSettings())
    quantize_graph_static(scratch / "model.onnx", output / "model.onnx", feeds,
                          QuantizeSettings(calibration="percentile"))
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openmaas.errors import OptimizationFailed

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SAMPLE_TEXTS = ("a short text", "a somewhat longer text, so that the batch is padded")
OPSET = 18


@dataclass(frozen=True, slots=True)
class QuantizeSettings:
    per_channel: bool = True  # a scale per output channel: 0.99 cosine on MiniLM, 0.90 without
    weight_type: str = "qint8"  # qint8 | quint8
    reduce_range: bool = False  # 7-bit weights, for CPUs without VNNI that saturate
    operators: tuple[str, ...] = ("MatMul",)  # the operator types whose weights become int8
    calibration: str = "minmax"  # static only: minmax | percentile (99.999th, the default)


CALIBRATIONS = ("minmax", "percentile")


def export_transformer(checkpoint: Path, task: str, target: Path) -> None:
    """`checkpoint` (a transformers directory) as an ONNX graph at `target`, with dynamic
    batch and sequence axes; inputs as the ONNX runtime feeds them."""
    import torch
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    loaders = {
        "embedding": AutoModel,
        "text-classification": AutoModelForSequenceClassification,
        "token-classification": AutoModelForTokenClassification,  # logits per token
    }
    loader = loaders[task]
    from openmaas.runtimes.transformers_heads import from_pretrained

    try:
        network = from_pretrained(loader, checkpoint, attn_implementation="eager").eval()
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    except (OSError, ValueError) as exc:
        raise OptimizationFailed(f"cannot load the parent's checkpoint: {exc}") from exc
    output = "last_hidden_state" if task == "embedding" else "logits"

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            result = self.network(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return getattr(result, output)  # type: ignore[no-any-return]

    encoded = tokenizer(list(SAMPLE_TEXTS), padding=True, return_tensors="pt")
    args = tuple(encoded.get(name, torch.zeros_like(encoded["input_ids"])) for name in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUTS, output)}
    if task == "text-classification":
        axes[output] = {0: "batch"}
    raw = target.with_suffix(".raw.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                Graph(),
                args,
                str(raw),
                input_names=list(INPUTS),
                output_names=[output],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many untyped errors
            raise OptimizationFailed(f"torch could not export the model to ONNX: {exc}") from exc
    try:
        optimize_graph(raw, target)
    finally:
        raw.unlink(missing_ok=True)


def optimize_graph(source: Path, target: Path) -> None:
    """onnxruntime's portable (basic) graph optimizations, saved as one file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors are untyped
        raise OptimizationFailed(f"onnxruntime cannot optimize the graph: {exc}") from exc


def quantize_graph(source: Path, target: Path, settings: QuantizeSettings) -> None:
    """Dynamic int8: weights quantized once, activations per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = QuantType.QUInt8 if settings.weight_type == "quint8" else QuantType.QInt8
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=weight_type,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            op_types_to_quantize=list(settings.operators),
            extra_options={"MatMulConstBOnly": True},
        )
    except Exception as exc:  # onnxruntime.quantization raises untyped errors
        raise OptimizationFailed(
            f"onnxruntime could not quantize the graph (an already quantized model cannot "
            f"be quantized again): {exc}"
        ) from exc


def quantize_graph_static(
    source: Path,
    target: Path,
    feeds: Iterable[Mapping[str, Any]],
    settings: QuantizeSettings,
) -> None:
    """Static int8 in QDQ format: activation ranges from running `source` on `feeds` (the
    graph's inputs, batch by batch)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if settings.calibration == "percentile":
        # Its histograms stack every batch's activations into one array: same shapes only.
        feeds = uniform_batches(feeds)

    class Feeds(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            self.batches = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else dict(batch)

    method = (
        CalibrationMethod.Percentile
        if settings.calibration == "percentile"
        else CalibrationMethod.MinMax
    )
    weight_type = QuantType.QUInt8 if settings.weight_type == "quint8" else QuantType.QInt8
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
            quantize_static(
                str(source),
                str(target),
                Feeds(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(settings.operators),
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=weight_type,
                calibrate_method=method,
                extra_options={"MatMulConstBOnly": True},
            )
    except Exception as exc:  # onnxruntime.quantization raises untyped errors
        raise OptimizationFailed(f"onnxruntime could not quantize the graph: {exc}") from exc


def uniform_batches(
    feeds: Iterable[Mapping[str, Any]], rows: int = 16
) -> list[dict[str, np.ndarray[Any, Any]]]:
    """The same inputs in batches of one shape: `rows` texts (the last batch filled up with
    the first ones), each 2-D input right-padded with 0 (padding ids, masked positions) to the
    widest batch; 1-D inputs (lengths) are unchanged."""
    batches = [dict(batch) for batch in feeds]
    if not batches:
        return []
    width = max(
        int(array.shape[1]) for batch in batches for array in batch.values() if array.ndim == 2
    )
    stacked: dict[str, np.ndarray[Any, Any]] = {}
    for name in batches[0]:
        arrays = [np.asarray(batch[name]) for batch in batches]
        if arrays[0].ndim == 2:
            arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays]
        stacked[name] = np.concatenate(arrays)
    total = len(next(iter(stacked.values())))
    order = np.arange(-(-total // rows) * rows) % total
    return [
        {name: array[order[start : start + rows]] for name, array in stacked.items()}
        for start in range(0, len(order), rows)
    ]
