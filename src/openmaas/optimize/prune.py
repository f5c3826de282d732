"""The `prune` method: remove a share of a transformers encoder's or classifier's weights by
magnitude, optionally followed by a short fine-tune of a classifier on the job's training file.

- `kind: "unstructured"` sets the smallest weights (L1 magnitude) of the encoder layers'
  Linear matrices to zero, over all of them at once (`scope: "global"`) or layer by layer
  (`"layer"`), with `torch.nn.utils.prune`, made permanent after the fine-tune. The tensors
  keep their shapes: dense kernels do the same work on zeros, so this buys no speed or size
  on its own (the job's measured speed-ups show it: MiniLM at 50%, p50 0.99x the parent's
  on one thread); it is the first step of a sparse or compressed deployment, and
  `achieved_sparsity` says how far it got.
- A TextCNN (`openmaas-nn`) is pruned structurally only: the least important convolution
  filters of every width go, with the head's inputs that read them (`prune_filters.py`).
- `kind: "structured"` really shrinks the tensors: in every layer it removes the same number
  of feed-forward channels (the rows of `intermediate.dense` and columns of `output.dense`
  whose weights matter least: the product of the two L2 norms), and writes the smaller
  `intermediate_size` into the config, so the checkpoint loads with plain `from_pretrained`.
  The feed-forward block holds two thirds of a BERT layer's weights, so removing half its
  channels removes a third of the layer's work.
- `kind: "structured"` with `structure: "heads"` removes attention heads of BERT-family
  encoders instead, chosen by importance (`prune_heads.py`); the checkpoint records the kept
  heads, and the transformers runtime loads it through its own attention module
  (`runtimes.transformers_heads`).
- The fine-tune distils from the parent by default (`distillation`, `temperature`, `alpha`;
  `fine_tune.py`).

Example::

    job = client.create_optimization_job(
        "my-classifier", "prune",
        settings={"kind": "structured", "sparsity": 0.5, "fine_tune_epochs": 2},
        training_file="file-...")
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from openmaas.errors import InvalidRequest, OptimizationFailed
from openmaas.optimize.checkpoints import (
    TASKS,
    checkpoint_directory,
    encoder_layers,
    open_network,
    parameter_count,
    write_network,
)
from openmaas.optimize.methods import (
    BuildContext,
    Built,
    Method,
    boolean,
    choice,
    integer,
    number,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from openmaas.registry.files import OpenedVersion

# torch is imported where used (see `optimize.checkpoints`).

PRUNE = "prune"
KINDS = ("unstructured", "structured")
STRUCTURES = ("ffn", "heads")  # what structured pruning removes: feed-forward channels, heads
SCOPES = ("global", "layer")
MAX_FINE_TUNE_EPOCHS = 20
MAX_HEADS = 1024  # heads_per_layer's static bound; the parent's head count is the real one
MAX_TEMPERATURE = 20.0  # the distillation's softening; 1-4 is the usual range
# The feed-forward block of a BERT-style layer: up projection, down projection, the config's
# width of the block.
FFN_UP, FFN_DOWN, FFN_WIDTH = "intermediate.dense", "output.dense", "intermediate_size"
# Pruned weights, by module: torch's pruning hooks keep `weight_orig` and a mask until removed.
Pruned = list[tuple["torch.nn.Module", str]]


def build_pruned(context: BuildContext) -> Built:
    settings = context.settings
    if context.version.runtime == "openmaas-nn":  # a TextCNN: its convolution filters
        from openmaas.optimize.prune_filters import build_pruned_filters

        return build_pruned_filters(context)
    network = open_network(context)
    parent_parameters = parameter_count(network)
    sparsity = float(settings["sparsity"])
    metrics: dict[str, float] = {}
    pruned: Pruned = []
    epochs = int(settings["fine_tune_epochs"])
    tokenizer_dir = checkpoint_directory(context.parent)
    teacher = None
    if epochs > 0 and settings["distillation"]:  # the parent's outputs, before it changes
        from openmaas.optimize.fine_tune import Distillation, parent_logits

        logits = parent_logits(context, network, tokenizer_dir)
        teacher = Distillation(logits, float(settings["temperature"]), float(settings["alpha"]))
    if settings["kind"] == "unstructured":
        context.message(f"Zeroing {sparsity:.0%} of the encoder's Linear weights by magnitude")
        pruned = prune_unstructured(network, sparsity, str(settings["scope"]))
    elif settings["structure"] == "heads":
        from openmaas.optimize.prune_heads import prune_attention_heads

        metrics.update(prune_attention_heads(context, network))
    else:
        width, kept = prune_ffn_channels(network, sparsity)
        context.message(f"Kept {kept} of {width} feed-forward channels in every layer")
        metrics["ffn_channels_kept"] = float(kept)
        metrics["achieved_sparsity"] = 1 - kept / width
    context.check_stop("after pruning")
    if epochs > 0:
        from openmaas.optimize.fine_tune import FineTune, fine_tune_classifier

        plan = FineTune(epochs, float(settings["learning_rate"]))
        metrics.update(fine_tune_classifier(context, network, tokenizer_dir, plan, teacher))
    if pruned:
        metrics["achieved_sparsity"] = make_permanent(pruned)
    metrics["parameter_ratio"] = parameter_count(network) / max(parent_parameters, 1)
    metrics["parameters_removed"] = float(parent_parameters - parameter_count(network))
    context.message(f"Achieved sparsity {metrics['achieved_sparsity']:.3f}")
    return Built("transformers", write_network(context, network), metrics)


def linear_weights(network: PreTrainedModel) -> Pruned:
    """The weight matrices of every Linear inside the encoder layers (not the embeddings,
    pooler or classifier head)."""
    import torch

    _, layers = encoder_layers(network)
    return [
        (module, "weight")
        for layer in layers
        for module in layer.modules()
        if isinstance(module, torch.nn.Linear)
    ]


def prune_unstructured(network: PreTrainedModel, sparsity: float, scope: str) -> Pruned:
    """Mask the smallest weights; the masks stay (through a fine-tune) until `make_permanent`."""
    from torch.nn.utils import prune as torch_prune

    weights = linear_weights(network)
    if scope == "global":
        torch_prune.global_unstructured(
            weights, pruning_method=torch_prune.L1Unstructured, amount=sparsity
        )
    else:
        for module, name in weights:
            torch_prune.l1_unstructured(module, name, amount=sparsity)  # type: ignore[no-untyped-call]
    return weights


def make_permanent(pruned: Pruned) -> float:
    """Fold the masks into the weights; the share of those weights that are zero."""
    from torch.nn.utils import prune as torch_prune

    zeros = total = 0
    for module, name in pruned:
        torch_prune.remove(module, name)  # type: ignore[no-untyped-call]
        weight = getattr(module, name)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / max(total, 1)


def prune_ffn_channels(network: PreTrainedModel, sparsity: float) -> tuple[int, int]:
    """Remove `sparsity` of the feed-forward channels, the same number in every layer (the
    config has one width for all), each layer its least important ones; the width before
    and after."""
    import torch

    config = network.config
    width = getattr(config, FFN_WIDTH, None)
    if not isinstance(width, int):
        raise OptimizationFailed(
            f"{type(network).__name__} has no {FFN_WIDTH} in its config: structured pruning "
            "knows BERT-style feed-forward blocks"
        )
    keep = max(1, width - round(sparsity * width))
    _, layers = encoder_layers(network)
    for layer in layers:
        up, down = _ffn(layer, width)
        with torch.no_grad():
            importance = up.weight.norm(dim=1) * down.weight.norm(dim=0)
            kept = importance.topk(keep).indices.sort().values
            smaller_up = torch.nn.Linear(up.in_features, keep, bias=up.bias is not None)
            smaller_up.weight.copy_(up.weight[kept])
            if up.bias is not None:
                smaller_up.bias.copy_(up.bias[kept])
            smaller_down = torch.nn.Linear(keep, down.out_features, bias=down.bias is not None)
            smaller_down.weight.copy_(down.weight[:, kept])
            if down.bias is not None:
                smaller_down.bias.copy_(down.bias)
        _replace(layer, FFN_UP, smaller_up)
        _replace(layer, FFN_DOWN, smaller_down)
    setattr(config, FFN_WIDTH, keep)
    return width, keep


def _ffn(layer: torch.nn.Module, width: int) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    import torch

    up: torch.nn.Module | None = None
    down: torch.nn.Module | None = None
    with contextlib.suppress(AttributeError):
        up, down = layer.get_submodule(FFN_UP), layer.get_submodule(FFN_DOWN)
    if not (
        isinstance(up, torch.nn.Linear)
        and isinstance(down, torch.nn.Linear)
        and up.out_features == width == down.in_features
    ):
        raise OptimizationFailed(
            f"a {type(layer).__name__} has no feed-forward pair {FFN_UP} / {FFN_DOWN} of width "
            f"{width}: structured pruning knows BERT-style layers"
        )
    return up, down


def _replace(root: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    owner_path, _, name = path.rpartition(".")
    setattr(root.get_submodule(owner_path) if owner_path else root, name, module)


def check_against_parent(settings: dict[str, Any], parent: OpenedVersion) -> None:
    """A fine-tune trains classifiers; structured pruning needs a feed-forward width."""
    version = parent.version
    reference = f"{version.model}:{version.version}"
    if version.runtime == "openmaas-nn":
        if _architecture(parent) != "textcnn":
            raise InvalidRequest(
                f"{reference} is an openmaas-nn {_architecture(parent)} network; pruning takes "
                "TextCNNs (their convolution filters) and transformers models",
                param="method",
                code="method_not_applicable",
            )
        if settings["kind"] != "structured":
            raise InvalidRequest(
                f"{reference} is a TextCNN: pruning removes its convolution filters (kind "
                "'structured'); zeroing weights in place buys nothing on its dense kernels",
                param="settings.kind",
            )
        if settings["structure"] != "ffn" or settings["heads_per_layer"] is not None:
            raise InvalidRequest(
                f"settings.structure: {reference} is a TextCNN, which has no attention heads; "
                "structured pruning removes its convolution filters (leave structure out)",
                param="settings.structure",
            )
        if settings["fine_tune_epochs"] > 0:
            raise InvalidRequest(
                f"settings.fine_tune_epochs: the fine-tune after pruning trains transformers "
                f"classifiers; {reference} is a TextCNN (set it to 0, or train it again)",
                param="settings.fine_tune_epochs",
            )
        return
    if settings["fine_tune_epochs"] > 0 and version.task != "text-classification":
        raise InvalidRequest(
            f"settings.fine_tune_epochs: the fine-tune after pruning trains classifiers; "
            f"{reference} is a {version.task} model (set it to 0)",
            param="settings.fine_tune_epochs",
        )
    if settings["structure"] != "ffn" and settings["kind"] != "structured":
        raise InvalidRequest(
            f"settings.structure {settings['structure']!r} is structured pruning: set kind "
            "to 'structured' as well",
            param="settings.structure",
        )
    if settings["heads_per_layer"] is not None and settings["structure"] != "heads":
        raise InvalidRequest(
            "settings.heads_per_layer applies to structured pruning of attention heads: set "
            "structure to 'heads' (or leave heads_per_layer out)",
            param="settings.heads_per_layer",
        )
    if settings["structure"] == "heads":
        from openmaas.optimize.prune_heads import check_heads_settings

        check_heads_settings(settings, checkpoint_directory(parent) / "config.json", reference)
    elif settings["kind"] == "structured":
        config = checkpoint_directory(parent) / "config.json"
        try:
            width = json.loads(config.read_text(encoding="utf-8")).get(FFN_WIDTH)
        except (OSError, ValueError):
            width = None
        if not isinstance(width, int) or width < 2:
            raise InvalidRequest(
                f"{reference} has no {FFN_WIDTH} in its config: structured pruning removes "
                "feed-forward channels of BERT-style encoders (kind 'unstructured' applies)",
                param="settings.kind",
            )


def _architecture(parent: OpenedVersion) -> str | None:
    try:
        spec = json.loads((parent.directory / "openmaas.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    architecture = spec.get("architecture") if isinstance(spec, dict) else None
    return str(architecture) if architecture is not None else None


def _needs_training_file(settings: Mapping[str, Any]) -> bool:
    return bool(settings.get("fine_tune_epochs"))


METHODS = (
    Method(
        name=PRUNE,
        summary=(
            "magnitude pruning: zero weights (unstructured: no speed-up on dense kernels) or "
            "remove feed-forward channels or attention heads (structured: smaller, faster), "
            "optional fine-tune distilled from the parent"
        ),
        defaults={
            "kind": "unstructured",
            "sparsity": 0.5,
            "scope": "global",
            "structure": "ffn",
            "heads_per_layer": None,
            "fine_tune_epochs": 0,
            "learning_rate": 3e-5,
            "distillation": True,
            "temperature": 2.0,
            "alpha": 0.5,
        },
        runtimes=frozenset({"transformers", "openmaas-nn"}),
        tasks=TASKS,
        suffix="pruned",
        # Of the platform's networks, TextCNNs: their convolution filters.
        applies=lambda version: (
            version.runtime != "openmaas-nn"
            or version.params.get("architecture") in (None, "textcnn")
        ),
        build=build_pruned,
        checks=(
            choice("kind", KINDS),
            number("sparsity", 0, 0.99, low_open=True),
            choice("scope", SCOPES),
            choice("structure", STRUCTURES),
            integer("heads_per_layer", 1, MAX_HEADS, optional=True),
            integer("fine_tune_epochs", 0, MAX_FINE_TUNE_EPOCHS),
            number("learning_rate", 0, 0.01, low_open=True),
            boolean("distillation"),
            number("temperature", 0, MAX_TEMPERATURE, low_open=True),
            number("alpha", 0, 1),
        ),
        needs_training_file=_needs_training_file,
        check_parent=check_against_parent,
    ),
)
