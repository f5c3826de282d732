"""A network of this package exported to ONNX (`model.onnx`, written by the `onnx` and
`quantize` optimization methods), run on onnxruntime behind the torch network's call
signature: (ids, lengths) -> logits, or (ids, lengths, casing) -> logits per piece for the
tagger. The `openmaas-nn` runtime serves such a directory exactly as it serves the torch one.

The directory is the saved format of `openmaas.nn.saved` with `model.onnx` in place of
`model.safetensors`; its `openmaas.json` says `"format": "onnx"` and records the network's
`min_length` (the fewest columns a batch is padded to), which the torch network would have
told.

Example::

    saved = load_graph_classifier(directory, threads=4)
    logits = saved.network(ids, lengths)  # a torch tensor, computed by onnxruntime
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from openmaas.nn.saved import RUNTIME, SPEC_VERSION, TASK, TOKENIZER_FILE, SavedClassifier
from openmaas.runtimes.base import NATIVE_SPEC

GRAPH_FILE = "model.onnx"
GRAPH_FORMAT = "onnx"
INPUTS = ("ids", "lengths", "casing")  # the graph's inputs, as the torch network's arguments
OUTPUT = "logits"


class GraphNetwork(nn.Module):
    """An ONNX graph with a torch network's call signature. It has no parameters: the
    weights live in the graph."""

    def __init__(self, path: Path, *, min_length: int, threads: int | None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        # One batch runs at a time per model: parallelism goes inside operators.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session: Any = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = tuple(declared.name for declared in self.session.get_inputs())
        unknown = set(self.inputs) - set(INPUTS)
        if unknown:
            raise ValueError(f"{path.name} takes inputs {sorted(unknown)}, not {INPUTS}")
        self.min_length = min_length
        self.graph_bytes = path.stat().st_size

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, casing: torch.Tensor | None = None
    ) -> torch.Tensor:
        given = {"ids": ids, "lengths": lengths, "casing": casing}
        feeds = {}
        for name in self.inputs:
            value = given[name]
            if value is None:
                raise ValueError(f"the graph needs input {name!r}")
            feeds[name] = value.cpu().numpy().astype(np.int64, copy=False)
        (logits,) = self.session.run([OUTPUT], feeds)
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))


def is_graph_directory(directory: Path) -> bool:
    return (directory / GRAPH_FILE).is_file()


def graph_spec(spec: dict[str, Any], *, min_length: int) -> dict[str, Any]:
    """The `openmaas.json` of a torch network's directory, for its exported graph."""
    return {**spec, "format": GRAPH_FORMAT, "min_length": min_length}


def load_graph_classifier(directory: Path, *, threads: int | None = None) -> SavedClassifier:
    """As `saved.load_classifier`, for a graph directory. Raises OSError for missing files,
    ValueError for ones that do not agree (onnxruntime's own errors for a bad graph)."""
    spec = json.loads((directory / NATIVE_SPEC).read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or spec.get("runtime") != RUNTIME:
        raise ValueError(f"{NATIVE_SPEC} does not describe an {RUNTIME} model")
    if spec.get("spec_version") != SPEC_VERSION or spec.get("format") != GRAPH_FORMAT:
        raise ValueError(
            f"{NATIVE_SPEC} (version {spec.get('spec_version')!r}, format "
            f"{spec.get('format')!r}) does not describe an exported graph"
        )
    try:
        network = GraphNetwork(
            directory / GRAPH_FILE, min_length=int(spec.get("min_length", 1)), threads=threads
        )
    except OSError:
        raise
    except Exception as exc:  # onnxruntime's errors are untyped
        raise ValueError(f"onnxruntime cannot load {GRAPH_FILE}: {exc}") from exc
    return SavedClassifier(
        network=network,
        tokenizer=Tokenizer.from_file(str(directory / TOKENIZER_FILE)),
        labels=tuple(str(label) for label in spec["labels"]),
        max_input_tokens=int(spec["max_input_tokens"]),
        spec=spec,
        task=str(spec.get("task", TASK)),
    )
