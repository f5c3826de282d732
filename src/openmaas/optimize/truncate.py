"""The `truncate_layers` method: keep the first k encoder layers of a transformers encoder or
classifier and drop the rest (the cheap compression: no data, no training).

Each layer is an equal share of an encoder's compute, so keeping k of n layers makes a pass
about n/k times faster; the runner measures what it bought and how far the outputs moved
from the parent's (a classifier's head was trained on the last layer's output, so read its
agreement before moving an alias to it). The result is a transformers checkpoint with
`num_hidden_layers` = k in its config, in the parent's layout (see `optimize.checkpoints`).

Example::

    job = client.create_optimization_job("all-minilm-l6-v2", "truncate_layers",
                                         settings={"layers": 3})
"""

from __future__ import annotations

import json
import math
from typing import Any

from openmaas.errors import InvalidRequest
from openmaas.optimize.checkpoints import (
    TASKS,
    checkpoint_directory,
    keep_first_layers,
    open_network,
    write_network,
)
from openmaas.optimize.methods import BuildContext, Built, Method, integer
from openmaas.registry.files import OpenedVersion

TRUNCATE_LAYERS = "truncate_layers"
MAX_LAYERS = 1000


def build_truncated(context: BuildContext) -> Built:
    network = open_network(context)
    before = int(network.config.num_hidden_layers)
    layers = int(context.settings["layers"])
    context.message(f"Keeping the first {layers} of {before} encoder layers")
    keep_first_layers(network, layers)
    params = write_network(context, network)
    return Built("transformers", params, {"layers": float(layers), "parent_layers": float(before)})


def check_layers(settings: dict[str, Any], parent: OpenedVersion) -> None:
    """`layers` below the parent's count; by default half of it, rounded up."""
    config = checkpoint_directory(parent) / "config.json"
    try:
        count = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    except (OSError, ValueError):
        count = None
    version = f"{parent.version.model}:{parent.version.version}"
    if not isinstance(count, int) or count < 2:
        raise InvalidRequest(
            f"{version} has {count if isinstance(count, int) else 'no'} num_hidden_layers in "
            "its config: truncate_layers needs an encoder of 2 layers or more",
            param="method",
            code="method_not_applicable",
        )
    if settings["layers"] is None:
        settings["layers"] = math.ceil(count / 2)
    if not settings["layers"] < count:
        raise InvalidRequest(
            f"settings.layers must be below the {count} layers of {version} (the layers "
            f"kept), got {settings['layers']}",
            param="settings.layers",
        )


METHODS = (
    Method(
        name=TRUNCATE_LAYERS,
        summary="keep the first `layers` encoder layers (default: half, rounded up)",
        defaults={"layers": None},
        runtimes=frozenset({"transformers"}),
        tasks=TASKS,
        suffix="truncated",
        build=build_truncated,
        checks=(integer("layers", 1, MAX_LAYERS, optional=True),),
        check_parent=check_layers,
    ),
)
