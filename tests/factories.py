"""Small model directories written by tests: real formats, tiny sizes, random weights."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.registry.composition import Registry
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory


def write_hf_model(
    directory: Path,
    *,
    architecture: str = "BertForSequenceClassification",
    model_type: str = "bert",
    seed: int = 0,
    extra_config: dict[str, object] | None = None,
) -> Path:
    """A Hugging Face-shaped directory: config.json, safetensors weights, a tokenizer vocab."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "vocab_size": 16,
        "id2label": {"0": "negative", "1": "positive"},
        "label2id": {"negative": 0, "positive": 1},
        **(extra_config or {}),
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    rng = np.random.default_rng(seed)
    save_file(
        {"embeddings.weight": rng.standard_normal((16, 8)).astype(np.float32)},
        str(directory / "model.safetensors"),
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(11)]]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return directory


def make_tarball(source: Path, target: Path, *, arcname: str | None = None) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(source, arcname=arcname or source.name)
    return target


def member(project: str, *scopes: Scope) -> Principal:
    """A caller holding a non-admin key of `project` (training scope unless told)."""
    return Principal(
        project=project, key_id=1, prefix=f"{project}key", scopes=scopes or (Scope.TRAINING,)
    )


def register(
    registry: Registry, tmp_path: Path, name: str = "clf", seed: int = 0, **spec: object
) -> int:
    model_dir = write_hf_model(tmp_path / f"src-{name}-{seed}", seed=seed)
    version = registry.registration.register_plan(
        name, plan_directory(model_dir), VersionSpec(**spec), caller=SYSTEM
    )  # type: ignore[arg-type]
    return version.version
