"""The transformers memory estimate counts the network the config declares (built on the meta
device), not the weight files, and refuses configs with implausibly many repeated modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModel

from openmaas.errors import ModelTooLarge
from openmaas.runtimes.base import ModelSource
from openmaas.runtimes.transformers import TransformersRuntime
from openmaas.runtimes.transformers_memory import declared_bytes
from tests.runtimes.tiny_models import build_bert, minilm_path


def test_a_real_checkpoint_is_estimated_at_its_float32_size() -> None:
    network = AutoModel.from_pretrained(minilm_path(), local_files_only=True)
    values = sum(t.numel() for t in [*network.parameters(), *network.buffers()])
    assert declared_bytes(minilm_path(), AutoModel) == values * 4


def test_the_declared_network_wins_over_small_weight_files(tmp_path: Path) -> None:
    directory = build_bert(tmp_path / "bert")
    source = ModelSource.for_directory(directory, task="embedding", runtime="transformers")
    small = TransformersRuntime().estimate_memory_bytes(source)
    config = json.loads((directory / "config.json").read_text())
    config.update(hidden_size=4096, num_hidden_layers=48, intermediate_size=16384)
    (directory / "config.json").write_text(json.dumps(config))
    # 48 layers of 12 * 4096^2 weights: about 9.7e9 values, 36 GiB in float32
    assert TransformersRuntime().estimate_memory_bytes(source) > 30 * small
    assert TransformersRuntime().estimate_memory_bytes(source) > 36 << 30


def test_implausibly_many_layers_are_refused_before_any_build(tmp_path: Path) -> None:
    directory = build_bert(tmp_path / "bert")
    config = json.loads((directory / "config.json").read_text())
    config["text_config"] = {"num_hidden_layers": 5000}  # nested configs are read too
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelTooLarge, match="num_hidden_layers=5000"):
        declared_bytes(directory, AutoModel)


def test_a_config_transformers_cannot_build_falls_back_to_the_files(tmp_path: Path) -> None:
    directory = build_bert(tmp_path / "bert")
    (directory / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    assert declared_bytes(directory, AutoModel) is None
    source = ModelSource.for_directory(directory, task="embedding", runtime="transformers")
    weights = (directory / "model.safetensors").stat().st_size
    assert TransformersRuntime().estimate_memory_bytes(source) == int(weights * 1.2)
