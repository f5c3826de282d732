"""What an optimization job request says (the methods themselves: `optimize.methods`).

Example::

    request = OptimizationRequest(model="all-minilm-l6-v2", method="quantize",
                                  settings={"per_channel": False})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class OptimizationRequest:
    model: str  # the parent: a reference (`name`, `name:3`, `name@production`)
    method: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    model_name: str | None = None  # register as this model's next version
    alias: str | None = None
    # A labelled file to measure quality on (accuracy, F1) beside the parent.
    eval_file: str | None = None
    # The file a method learns from (distillation, a fine-tune after pruning).
    training_file: str | None = None
