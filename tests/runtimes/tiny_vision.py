"""A tiny Hugging Face image classifier built inside the test session: a ViT config of a
few thousand parameters with random weights and its image processor, saved as a hub
directory is (`config.json`, `model.safetensors`, `preprocessor_config.json`).

Example::

    path = build_vit(tmp_path / "vit", labels=["cat", "dog", "bird"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor


def build_vit(directory: Path, labels: Sequence[str], *, side: int = 32, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=side,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(directory)
    return directory
