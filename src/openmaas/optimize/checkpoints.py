"""A transformers parent opened as a torch network to change, and the changed network written
back as a version the transformers runtime serves: what `truncate_layers` and `prune` share.

The output keeps the parent's layout: a sentence-transformers directory stays one (its
`modules.json`, pooling and normalization modules and `sentence_bert_config.json`), with the
changed network saved where the parent kept its own; the tokenizer files come along, and
the version's params are the parent's (pooling, normalize, ...), so both serve alike.

Example::

    network = open_network(context)
    keep_first_layers(network, 3)
    params = write_network(context, network)
    return Built("transformers", params)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.errors import OptimizationFailed
from openmaas.runtimes.base import ModelSource
from openmaas.runtimes.kept_heads import KEPT_HEADS

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from openmaas.optimize.methods import BuildContext
    from openmaas.registry.files import OpenedVersion

# torch and transformers are imported where used: the API process lists the methods (and
# imports this module through them) without loading either.

TASKS = frozenset({"embedding", "text-classification"})
# Where encoder architectures keep their list of layers, under the base model.
LAYER_LISTS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer")
# Files of a checkpoint that `save_pretrained` writes anew (or that would be stale: another
# framework's copy of the old weights). Anything else of the parent is copied as it is.
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx"})
CONFIG_FILES = frozenset({"config.json", "generation_config.json"})
# Stored dtypes a changed network is saved back in (it is changed in float32).
HALF_DTYPES = frozenset({"float16", "bfloat16"})


def checkpoint_directory(parent: OpenedVersion) -> Path:
    """Where the parent keeps its network (a sentence-transformers directory may keep it in
    a subfolder)."""
    source = ModelSource.from_version(parent.version, parent.directory)
    if parent.version.task == "embedding":
        from openmaas.runtimes.transformers_encoders import EmbeddingModel

        return EmbeddingModel.checkpoint_directory(source)
    return source.directory


def open_network(context: BuildContext) -> PreTrainedModel:
    """The parent's network in float32 on the CPU, in eval mode."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    from openmaas.runtimes.transformers_heads import from_pretrained

    auto = AutoModel if context.version.task == "embedding" else AutoModelForSequenceClassification
    network: PreTrainedModel = from_pretrained(
        auto, checkpoint_directory(context.parent), local_files_only=True, dtype=torch.float32
    )
    module: torch.nn.Module = network  # through nn.Module: transformers overrides it untyped
    module.eval()
    return network


def config_layer_count(config: Any) -> int:
    count = getattr(config, "num_hidden_layers", None)
    if not isinstance(count, int):
        raise OptimizationFailed(
            f"the model's config ({type(config).__name__}) says nothing of num_hidden_layers"
        )
    return count


def encoder_layers(network: PreTrainedModel) -> tuple[str, torch.nn.ModuleList]:
    """The encoder's list of layers and its path under the base model."""
    import torch

    count = config_layer_count(network.config)
    base: torch.nn.Module = network.base_model
    for path in LAYER_LISTS:
        try:
            layers = base.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, torch.nn.ModuleList) and len(layers) == count:
            return path, layers
    raise OptimizationFailed(
        f"found no list of {count} encoder layers in {type(network).__name__} (looked for "
        f"{', '.join(LAYER_LISTS)}): this architecture is not one the method knows"
    )


def keep_first_layers(network: PreTrainedModel, count: int) -> None:
    """Drop every encoder layer after the first `count`, in the network and its config."""
    import torch

    path, layers = encoder_layers(network)
    owner_path, _, name = path.rpartition(".")
    base: torch.nn.Module = network.base_model
    owner = base.get_submodule(owner_path) if owner_path else base
    setattr(owner, name, torch.nn.ModuleList(list(layers)[:count]))
    config = network.config
    config.num_hidden_layers = count
    # Architectures that describe each layer (sliding or full attention) list one per layer.
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list):
        config.layer_types = layer_types[:count]
    kept_heads = getattr(config, KEPT_HEADS, None)  # a head-pruned network's, per layer
    if isinstance(kept_heads, list):
        setattr(config, KEPT_HEADS, kept_heads[:count])


def write_network(context: BuildContext, network: PreTrainedModel) -> dict[str, Any]:
    """The changed network, saved where the parent keeps its own, beside the parent's other
    files; returns the new version's params (the parent's)."""
    source_checkpoint = checkpoint_directory(context.parent)
    relative = source_checkpoint.relative_to(context.parent.directory)

    def replaced(path: Path) -> bool:
        if path.suffix in WEIGHT_SUFFIXES or path.name.endswith(".index.json"):
            return True
        return path.parent == source_checkpoint and path.name in CONFIG_FILES

    context.copy_parent_files(skip=replaced)
    target = context.output_dir / relative
    target.mkdir(parents=True, exist_ok=True)
    restore_stored_dtype(network, source_checkpoint)
    network.save_pretrained(target)
    return {k: v for k, v in context.version.params.items() if k != "optimization"}


def restore_stored_dtype(network: PreTrainedModel, checkpoint: Path) -> None:
    """Back to the half precision the parent was stored in, if it was: a float16 parent
    must not come back twice its size."""
    import torch

    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    stored = config.get("dtype") or config.get("torch_dtype")
    if stored in HALF_DTYPES:
        module: torch.nn.Module = network
        module.to(getattr(torch, stored))


def parameter_count(network: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in network.parameters())
