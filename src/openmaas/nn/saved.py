"""The servable directory of a network trained here, written by the recipes and read by the
`openmaas-nn` runtime:

- `openmaas.json`: task (text-classification, or token-classification for a tagger),
  runtime, format, architecture, its config, labels in output order, and the longest input
  served in tokens;
- `model.safetensors`: the network's weights;
- `tokenizer.json`: the word-level tokenizer (`openmaas.nn.vocab`).

Networks take (ids, lengths) -> logits; `min_length` says how wide a batch must be at least.

Example::

    save_classifier(out, "textcnn", network, tokenizer, labels=("neg", "pos"), max_tokens=2048)
    saved = load_classifier(out)
    saved.network(ids, lengths)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch import nn

from openmaas.nn.encoder import EncoderConfig, TransformerEncoderClassifier
from openmaas.nn.rnn import RNNClassifier, RNNConfig
from openmaas.nn.tagger import RNNTagger, RNNTaggerConfig
from openmaas.nn.textcnn import TextCNN, TextCNNConfig
from openmaas.runtimes.base import NATIVE_SPEC

RUNTIME = "openmaas-nn"
TASK = "text-classification"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
SPEC_VERSION = 1
# Convolutions and recurrences take any length; this bounds one text's compute when served.
LONGEST_INPUT_TOKENS = 4096


def _textcnn(config: Mapping[str, Any]) -> nn.Module:
    return TextCNN(TextCNNConfig.from_dict(dict(config)))


def _rnn(config: Mapping[str, Any]) -> nn.Module:
    return RNNClassifier(RNNConfig.from_dict(dict(config)))


def _encoder(config: Mapping[str, Any]) -> nn.Module:
    return TransformerEncoderClassifier(EncoderConfig.from_dict(dict(config)))


def _rnn_tagger(config: Mapping[str, Any]) -> nn.Module:
    return RNNTagger(RNNTaggerConfig.from_dict(dict(config)))


ARCHITECTURES: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "textcnn": _textcnn,
    "rnn": _rnn,
    "transformer-encoder": _encoder,
    "rnn-tagger": _rnn_tagger,  # (ids, lengths, casing) -> per-piece logits
}


def build_network(architecture: str, config: Mapping[str, Any]) -> nn.Module:
    builder = ARCHITECTURES.get(architecture)
    if builder is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {architecture!r} (known: {known})")
    return builder(config)


def min_length(network: nn.Module) -> int:
    """The fewest columns a batch for `network` is padded to."""
    return int(getattr(network, "min_length", 1))


def network_config(network: nn.Module) -> dict[str, Any]:
    config = getattr(network, "config", None)
    if config is None:
        raise TypeError(f"{type(network).__name__} is not an openmaas.nn network")
    values: dict[str, Any] = asdict(config)
    return values


@dataclass(frozen=True, slots=True)
class SavedClassifier:
    network: nn.Module  # in eval mode, on the CPU
    tokenizer: Tokenizer
    labels: tuple[str, ...]
    max_input_tokens: int
    spec: dict[str, Any]
    task: str = TASK


def save_classifier(
    directory: Path,
    architecture: str,
    network: nn.Module,
    tokenizer: Tokenizer,
    *,
    labels: Sequence[str],
    max_input_tokens: int,
    extra: Mapping[str, Any] | None = None,
    task: str = TASK,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "task": task,
        "runtime": RUNTIME,
        "format": "safetensors",
        "spec_version": SPEC_VERSION,
        "architecture": architecture,
        "config": network_config(network),
        "labels": list(labels),
        "max_input_tokens": max_input_tokens,
        **(extra or {}),
    }
    save_model(network, str(directory / WEIGHTS_FILE))
    tokenizer.save(str(directory / TOKENIZER_FILE))
    (directory / NATIVE_SPEC).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def load_classifier(directory: Path) -> SavedClassifier:
    """Raises OSError for missing files and ValueError for ones that do not agree."""
    spec = json.loads((directory / NATIVE_SPEC).read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or spec.get("runtime") != RUNTIME:
        raise ValueError(f"{NATIVE_SPEC} does not describe an {RUNTIME} model")
    if spec.get("spec_version") != SPEC_VERSION:
        raise ValueError(f"{NATIVE_SPEC} version {spec.get('spec_version')!r} is not supported")
    labels = tuple(str(label) for label in spec["labels"])
    config = dict(spec["config"])
    if config.get("n_labels") != len(labels):
        raise ValueError(
            f"the network has {config.get('n_labels')} outputs for {len(labels)} labels"
        )
    network = build_network(str(spec["architecture"]), config)
    try:
        missing, unexpected = load_model(network, str(directory / WEIGHTS_FILE), strict=False)
    except RuntimeError as exc:  # tensors whose shapes differ from the config's
        raise ValueError(f"{WEIGHTS_FILE} does not fit the network: {exc}") from exc
    if missing or unexpected:
        raise ValueError(
            f"{WEIGHTS_FILE} does not fit the network: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    network.eval()
    tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    return SavedClassifier(
        network=network,
        tokenizer=tokenizer,
        labels=labels,
        max_input_tokens=int(spec["max_input_tokens"]),
        spec=spec,
        task=str(spec.get("task", TASK)),
    )
