"""ONNX graphs from transformers checkpoints, and their dynamic int8 quantization.

The export traces the network with torch's exporter (`dynamo=True`: the TorchScript one
silently mis-traces recent transformers' attention masks), then saves the graph after
onnxruntime's *basic* optimizations (constant folding, redundant node removal): they are
portable across machines, and the ONNX runtime applies the hardware-specific ones when it
loads the graph. Quantization replaces the weight matrices of `MatMul`s by int8
(`MatMulInteger`), keeping activation-by-activation products (attention scores) in fp32,
where int8 costs the most accuracy for the least speed.

Example::

    export_transformer(checkpoint, "embedding", scratch / "model.onnx")
    quantize_graph(scratch / "model.onnx", output / "model.onnx", QuantizeSettings())
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

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
    try:
        network = loader.from_pretrained(str(checkpoint), attn_implementation="eager").eval()
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
