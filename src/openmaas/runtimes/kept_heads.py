"""The record a head-pruned checkpoint keeps in its config.json: which attention heads each
layer kept (`KEPT_HEADS`), and which model types that applies to. Read without torch, so the
API process can check a job's settings against a parent without loading a network; loading
such a checkpoint is `transformers_heads`'s.

Example::

    kept = kept_heads_of(directory)  # [[0, 2, 3], [1, 3], ...] or None (not head-pruned)
"""

from __future__ import annotations

import json
from pathlib import Path

# Our config key: for every encoder layer, the indices (in the unpruned model) of its heads.
KEPT_HEADS = "openmaas_kept_heads"
# Model types whose layers are `encoder.layer[i].attention.{self.query|key|value, output.dense}`
# with BERT's self-attention: the ones head pruning knows.
BERT_FAMILY = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert"})


def kept_heads_of(directory: Path) -> list[list[int]] | None:
    """What a checkpoint's config.json records under `KEPT_HEADS`, if anything."""
    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kept = raw.get(KEPT_HEADS) if isinstance(raw, dict) else None
    return kept if isinstance(kept, list) else None
