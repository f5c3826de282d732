"""How large a request's inputs and a cached result are, as the engine weighs them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def input_chars(inputs: Any) -> int:
    """About how much text a request carries (characters, or token ids), counted to the
    second level: texts, lists of texts or of ids, a rerank query's documents."""
    if isinstance(inputs, str | bytes):
        return len(inputs)
    if hasattr(inputs, "documents"):
        return input_chars(getattr(inputs, "query", "")) + input_chars(inputs.documents)
    if isinstance(inputs, Sequence):
        return sum(len(i) if isinstance(i, str | bytes | Sequence) else 1 for i in inputs)
    return 0


def size_of(value: object) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, list):
        return 64 * max(1, len(value))
    return 64
