"""What a transformers checkpoint will take in memory, from what its `config.json` declares.

`from_pretrained` allocates every tensor the config describes, whatever the weight files hold:
missing weights are initialised, not skipped. A 100 KiB upload whose config declares a
200-layer, 65,536-wide network would allocate terabytes. So the pool's estimate is the larger
of the weight files and the declared network, counted by building the network on PyTorch's
`meta` device (shapes without storage: milliseconds per layer, no memory).

Building even a meta network costs time per module, so configs declaring more repeated modules
(layers, experts) than any real checkpoint has are refused before anything is built.

Example::

    declared_bytes(directory, AutoModel)  # -> 90_868_224 for all-MiniLM-L6-v2, float32
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from openmaas.errors import ModelTooLarge
from openmaas.runtimes.transformers_heads import from_config

log = logging.getLogger(__name__)

# The pool loads on CPU in float32 (see `load_checkpoint`); on a GPU a half-precision
# checkpoint takes half of this, so the estimate errs on the safe side there.
BYTES_PER_VALUE = 4
# Repeated modules a config may declare. The deepest published networks have about 128 layers
# and the widest mixtures a few hundred experts; a meta build of 1,024 layers takes seconds.
MAX_DECLARED_REPEATS = 1024
REPEAT_FIELDS = frozenset(
    {
        "num_hidden_layers",
        "num_layers",
        "n_layer",
        "n_layers",
        "num_decoder_layers",
        "encoder_layers",
        "decoder_layers",
        "num_local_experts",
        "num_experts",
        "n_routed_experts",
    }
)
MAX_CONFIG_DEPTH = 8  # nested configs (text_config, encoder/decoder) are one or two levels deep


def declared_bytes(directory: Path, auto_class: Any) -> int | None:
    """Bytes of the parameters and buffers `auto_class.from_config` builds from the directory's
    config, in float32; None when there is no config transformers can build (the load then
    fails with the library's own message). Raises `ModelTooLarge` for implausible repeats."""
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError):
        return None
    for field, count in _repeat_counts(raw, 0):
        if count > MAX_DECLARED_REPEATS:
            raise ModelTooLarge(
                f"config.json declares {field}={count}; this server loads networks with at "
                f"most {MAX_DECLARED_REPEATS} {field}",
                param="model",
            )
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        with torch.device("meta"):
            network = from_config(auto_class, config)
    # Any failure here is the load's to report (an unknown model type, custom code, a
    # malformed field): the estimate falls back to the weight files.
    except Exception as exc:
        log.debug("no meta build of %s: %s", directory, exc)
        return None
    module: torch.nn.Module = network
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(t.numel() for t in tensors) * BYTES_PER_VALUE


def _repeat_counts(node: object, depth: int) -> Iterator[tuple[str, int]]:
    if depth > MAX_CONFIG_DEPTH:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if key in REPEAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
                yield key, value
            else:
                yield from _repeat_counts(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            yield from _repeat_counts(value, depth + 1)
