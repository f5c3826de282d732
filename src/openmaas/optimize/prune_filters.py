"""Structured pruning of a TextCNN (the platform's `openmaas-nn` network): remove a share of
the convolution filters of every width, the least important ones, and the head's inputs that
read them, so the network really shrinks (fewer feature maps to compute, a smaller head).

A filter's importance is the L1 norm of its weights times the L2 norm of the head's weights
on its pooled feature: a filter the head barely reads matters little, however large. Every
width keeps the same number (`n_filters` is one number in the network's config), so the
result is an ordinary TextCNN the `openmaas-nn` runtime serves with the parent's tokenizer
and labels.

Example::

    built = build_pruned_filters(context)  # settings: {"kind": "structured", "sparsity": 0.5}
"""

from __future__ import annotations

import dataclasses
from typing import Any

from openmaas.errors import OptimizationFailed
from openmaas.optimize.methods import BuildContext, Built

TEXTCNN = "textcnn"
NETWORK_PARAMS = ("max_input_tokens", "labels", "architecture")


def build_pruned_filters(context: BuildContext) -> Built:
    import torch

    from openmaas.nn.saved import load_classifier, save_classifier
    from openmaas.nn.textcnn import TextCNN

    saved = load_classifier(context.parent.directory)
    network = saved.network
    if not isinstance(network, TextCNN):
        raise OptimizationFailed("structured pruning of openmaas-nn networks takes TextCNNs")
    before = sum(p.numel() for p in network.parameters())
    width, kept = prune_filters(network, float(context.settings["sparsity"]))
    context.message(f"Kept {kept} of {width} convolution filters of every width")
    standard = {"task", "runtime", "format", "spec_version", "architecture", "config", "labels"}
    extra = {k: v for k, v in saved.spec.items() if k not in standard | {"max_input_tokens"}}
    with torch.no_grad():
        save_classifier(
            context.output_dir,
            TEXTCNN,
            network,
            saved.tokenizer,
            labels=saved.labels,
            max_input_tokens=saved.max_input_tokens,
            extra=extra,
            task=saved.task,
        )
    after = sum(p.numel() for p in network.parameters())
    params = {k: v for k, v in context.version.params.items() if k in NETWORK_PARAMS}
    metrics = {
        "filters_kept": float(kept),
        "achieved_sparsity": 1 - kept / width,
        "parameter_ratio": after / max(before, 1),
    }
    return Built("openmaas-nn", params, metrics)


def prune_filters(network: Any, sparsity: float) -> tuple[int, int]:
    """Keep the `1 - sparsity` most important filters of each width (at least one); returns
    the filters per width before and after. Changes `network` in place."""
    import torch
    from torch import nn

    config = network.config
    width = int(config.n_filters)
    kept = max(1, round(width * (1 - sparsity)))
    head: nn.Linear = network.head
    convolutions: list[nn.Conv1d] = list(network.convolutions)
    columns = []
    replaced = []
    with torch.no_grad():
        for block, convolution in enumerate(convolutions):
            reads = head.weight[:, block * width : (block + 1) * width]
            importance = convolution.weight.abs().sum(dim=(1, 2)) * reads.norm(dim=0)
            keep = torch.sort(torch.topk(importance, kept).indices).values
            smaller = nn.Conv1d(
                convolution.in_channels, kept, convolution.kernel_size[0], bias=True
            )
            smaller.weight.copy_(convolution.weight[keep])
            assert convolution.bias is not None
            assert smaller.bias is not None
            smaller.bias.copy_(convolution.bias[keep])
            replaced.append(smaller)
            columns.append(keep + block * width)
        index = torch.cat(columns)
        new_head = nn.Linear(len(index), head.out_features)
        new_head.weight.copy_(head.weight[:, index])
        new_head.bias.copy_(head.bias)
    network.convolutions = nn.ModuleList(replaced)
    network.head = new_head
    network.config = dataclasses.replace(config, n_filters=kept)
    return width, kept
