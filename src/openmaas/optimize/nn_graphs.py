"""ONNX graphs of the platform's own networks (`openmaas-nn`: TextCNN, the recurrent
classifiers, the small Transformer encoder and the recurrent tagger), served by the
`openmaas-nn` runtime from `model.onnx` (`openmaas.nn.graph`).

Two exporters, by architecture, each the one that traces it faithfully:

- the convolutional and Transformer networks go through `torch.export` (`dynamo=True`); the
  TorchScript exporter fixes the attention's reshapes to the sample's length;
- the recurrent ones go through the TorchScript exporter: `torch.export` cannot trace
  `pack_padded_sequence` at all, while the TorchScript exporter turns packing into the ONNX
  LSTM/GRU's own `sequence_lens` input, so padding never enters the recurrence in the graph
  either (outputs within 1e-7 of torch's in any batch). A classifier pooling each
  direction's last state is exported as `LastStatesFromOutputs`: that exporter crashes on a
  one-layer network that reads its final state and leaves the outputs unused.

The graph's inputs are the network's arguments (`ids`, `lengths`, and `casing` for the
tagger), with dynamic batch and length axes; then onnxruntime's portable (basic) graph
optimizations, as for transformers graphs.

Example::

    min_length = export_network(parent_directory, work_dir / "model.onnx")
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from openmaas.errors import OptimizationFailed
from openmaas.nn.rnn import RNNClassifier
from openmaas.nn.saved import load_classifier, min_length
from openmaas.optimize.graphs import OPSET, SAMPLE_TEXTS, optimize_graph

# Architectures (`openmaas.nn.saved.ARCHITECTURES`) by the exporter that traces them.
DYNAMO_EXPORTED = frozenset({"textcnn", "transformer-encoder"})
TORCHSCRIPT_EXPORTED = frozenset({"rnn", "rnn-tagger"})
ARCHITECTURES = DYNAMO_EXPORTED | TORCHSCRIPT_EXPORTED
TAGGER = "rnn-tagger"
# Weight-bearing operators of these graphs that dynamic int8 pays off on: the embedding table
# (`Gather`: most of the bytes), `MatMul` and `LSTM` (about 2x faster at batch 32). Not
# `Conv`: onnxruntime's `ConvInteger` ran TextCNN 3x slower than fp32.
QUANTIZED_OPERATORS = ("MatMul", "Gather", "LSTM")
# Static (QDQ) int8 has no LSTM or GRU: their recurrences stay fp32.
STATIC_OPERATORS = ("MatMul", "Gather", "Conv")
CALIBRATION_BATCH = 32  # texts per calibration run


def export_network(directory: Path, target: Path) -> int:
    """The network saved in `directory` as an ONNX graph at `target`; returns its
    `min_length`, which the graph directory records."""
    try:
        saved = load_classifier(directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OptimizationFailed(f"cannot load the parent's network: {exc}") from exc
    architecture = str(saved.spec.get("architecture"))
    if architecture not in ARCHITECTURES:
        raise OptimizationFailed(f"no ONNX export for architecture {architecture!r}")
    network = saved.network.eval()
    shortest = min_length(network)
    if isinstance(network, RNNClassifier) and network.config.pooling == "last":
        network = LastStatesFromOutputs(network)
    names, args = _network_inputs(
        saved.tokenizer, architecture, SAMPLE_TEXTS, shortest, saved.max_input_tokens
    )
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "length"} for name in names}
    axes["lengths"] = {0: "batch"}
    axes["logits"] = {0: "batch", 1: "length"} if architecture == TAGGER else {0: "batch"}
    raw = target.with_suffix(".raw.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns that it is deprecated, and about packing's shapes.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                network,
                args,
                str(raw),
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=architecture in DYNAMO_EXPORTED,
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # the exporters raise many untyped errors
            raise OptimizationFailed(f"torch could not export the network to ONNX: {exc}") from exc
    try:
        optimize_graph(raw, target)
    finally:
        raw.unlink(missing_ok=True)
    return shortest


class LastStatesFromOutputs(nn.Module):
    """An `RNNClassifier` pooling `last`, its final states read from the top layer's padded
    outputs (the forward direction's at the text's last token, the backward direction's at
    its first), which is what packing makes them: the same function, in the form the
    TorchScript exporter traces."""

    def __init__(self, network: RNNClassifier) -> None:
        super().__init__()
        self.network = network

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        network = self.network
        packed = pack_padded_sequence(
            network.embedding(ids), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, _ = network.recurrent(packed)
        padded, _ = pad_packed_sequence(outputs, batch_first=True, total_length=ids.shape[1])
        width = network.config.hidden_size
        rows = torch.arange(ids.shape[0])
        pooled = padded[rows, lengths - 1, :width]
        if network.config.bidirectional:
            pooled = torch.cat([pooled, padded[:, 0, width:]], dim=1)
        logits: torch.Tensor = network.head(pooled)
        return logits


def calibration_feeds(directory: Path, texts: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The inputs of the graph directory's network for `texts`, batch by batch, as the
    `openmaas-nn` runtime feeds them (numpy arrays by input name)."""
    from tokenizers import Tokenizer

    from openmaas.nn.saved import TOKENIZER_FILE
    from openmaas.runtimes.base import NATIVE_SPEC

    spec = json.loads((directory / NATIVE_SPEC).read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    for start in range(0, len(texts), CALIBRATION_BATCH):
        names, args = _network_inputs(
            tokenizer,
            str(spec["architecture"]),
            texts[start : start + CALIBRATION_BATCH],
            int(spec.get("min_length", 1)),
            int(spec["max_input_tokens"]),
        )
        yield {name: arg.numpy() for name, arg in zip(names, args, strict=True)}


def _network_inputs(
    tokenizer: Any, architecture: str, texts: Sequence[str], shortest: int, longest: int
) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The network's arguments for `texts`, as the runtime pads them. The export's sample is
    two texts of different lengths: the exporters see a padded batch, not one length they
    could take for a constant."""
    from openmaas.nn.tagger import encode_texts, pad_pieces
    from openmaas.nn.vocab import pad_batch, token_ids

    texts = list(texts)
    if architecture == TAGGER:
        ids, casing, lengths = pad_pieces(encode_texts(tokenizer, texts, max_length=longest))
        return ("ids", "lengths", "casing"), (ids, lengths, casing)
    rows = token_ids(tokenizer, texts, max_length=longest)
    ids, lengths = pad_batch(rows, min_length=shortest)
    return ("ids", "lengths"), (ids, lengths)
