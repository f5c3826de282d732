"""Structured pruning of attention heads (`prune` with `kind: "structured"`, `structure:
"heads"`): choose the least important heads of a BERT-family encoder, slice them out of every
layer's query, key and value projections and the attention output's columns, and record the
heads each layer kept in the config (`transformers_heads.KEPT_HEADS`), which the transformers
runtime reads to load the smaller tensors (`transformers_heads.from_pretrained`).

A head's importance follows Michel et al. (2019, "Are Sixteen Heads Really Better than
One?"): a gate ξ_h = 1 multiplies each head's output, and I_h = E_x |∂L/∂ξ_h| over examples of
the job's training file (else its eval file), normalised by layer (L2). For a classifier L is
the cross-entropy on the file's labels; an embedding model has no labels, so L is a random
projection r·e(x) of each text's pooled vector (r ~ N(0, I), seeded): the expected |gradient|
then grows with how far removing the head moves the vector. Without any file the importance is
a weight-norm proxy: the L2 norm of the head's value rows times that of the output
projection's columns that read them (what the head can write into the residual stream). The
job's events say which one chose the heads.

Heads go over all layers at once (`scope: "global"`, the paper's way; every layer keeps at
least one) or the same number in each layer (`"layer"`, or `heads_per_layer`).

Example::

    kept = choose_heads(importance, sparsity=0.5, scope="global", heads_per_layer=None)
    prune_heads(network, kept)
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.errors import InvalidRequest
from openmaas.optimize.checkpoints import checkpoint_directory
from openmaas.optimize.methods import BuildContext
from openmaas.runtimes.kept_heads import BERT_FAMILY, KEPT_HEADS

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

# Examples the gradient importance is measured on (the first of the file), and per step.
IMPORTANCE_EXAMPLES = 512
IMPORTANCE_BATCH = 16
MAX_TOKENS = 128  # texts are cut to this many tokens while measuring importance
SEED = 0  # the random projections of an embedding model's loss


def prune_attention_heads(context: BuildContext, network: PreTrainedModel) -> dict[str, float]:
    """Choose and remove heads as the job's settings say; the metrics it adds."""
    from transformers import AutoTokenizer

    settings = context.settings
    before = sum(len(heads) for heads in current_heads(network))
    examples, which = _importance_examples(context, network)
    if examples:
        loss = (
            "the cross-entropy on its labels"
            if context.version.task == "text-classification"
            else "random projections of the pooled vectors"
        )
        context.message(
            f"Head importance: gradients of head gates (Michel et al., 2019) of {loss}, over "
            f"{len(examples)} examples of the job's {which} file"
        )
        tokenizer_dir = checkpoint_directory(context.parent)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        importance = gradient_importance(context, network, tokenizer, examples)
    else:
        context.message(
            "Head importance: the weight-norm proxy (a head's value rows times the output "
            "columns that read it): the job has no training or eval file to measure gradients on"
        )
        importance = weight_importance(network)
    per_layer = settings["heads_per_layer"]
    keep = choose_heads(
        importance,
        float(settings["sparsity"]),
        str(settings["scope"]),
        int(per_layer) if per_layer is not None else None,
    )
    prune_heads(network, keep)
    after = sum(len(heads) for heads in keep)
    counts = ", ".join(str(len(heads)) for heads in keep)
    context.message(f"Kept {after} of {before} attention heads (per layer: {counts})")
    return {
        "heads_kept": float(after),
        "parent_heads": float(before),
        "achieved_sparsity": 1 - after / before,
        "head_importance_from_gradients": 1.0 if examples else 0.0,
    }


def check_heads_settings(settings: Mapping[str, Any], config_path: Path, reference: str) -> None:
    """400s for a parent that is not a BERT-family encoder, or settings that would remove no
    head or every head of a layer."""
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    model_type = raw.get("model_type")
    heads = raw.get("num_attention_heads")
    layers = raw.get("num_hidden_layers")
    if (
        model_type not in BERT_FAMILY
        or raw.get("is_decoder")
        or not isinstance(heads, int)
        or not isinstance(layers, int)
    ):
        raise InvalidRequest(
            f"settings.structure: {reference} is a {model_type or 'non-transformers'} model; "
            f"pruning attention heads takes BERT-family encoders ({', '.join(sorted(BERT_FAMILY))})"
            "; structure 'ffn' or kind 'unstructured' apply to others",
            param="settings.structure",
        )
    kept = raw.get(KEPT_HEADS)
    counts = [len(row) for row in kept] if isinstance(kept, list) else [heads] * layers
    per_layer = settings["heads_per_layer"]
    if per_layer is not None:
        if per_layer >= max(counts):
            raise InvalidRequest(
                f"settings.heads_per_layer must be less than the {max(counts)} heads a layer of "
                f"{reference} has, got {per_layer}",
                param="settings.heads_per_layer",
            )
        return
    sparsity = float(settings["sparsity"])
    if settings["scope"] == "layer":
        removed = [round(sparsity * count) for count in counts]
        empties = any(count - gone < 1 for count, gone in zip(counts, removed, strict=True))
        total, least, most = max(counts), 1 / max(counts), (min(counts) - 1) / min(counts)
        none = not any(removed)
    else:
        total = sum(counts)
        gone = round(sparsity * total)
        empties, none = total - gone < len(counts), gone < 1
        least, most = 1 / total, (total - len(counts)) / total
    if none or empties:
        what = "removes no head" if none else "would remove every head of a layer"
        raise InvalidRequest(
            f"settings.sparsity {sparsity:g} {what} of {reference} ({total} heads, scope "
            f"{settings['scope']!r}): use from {least:.3f} to {most:.3f}",
            param="settings.sparsity",
        )


def _importance_examples(context: BuildContext, network: PreTrainedModel) -> tuple[list[Any], str]:
    """Up to `IMPORTANCE_EXAMPLES` usable examples of the training file, else the eval file
    (a seeded sample: files are often sorted by label), and which file they came from."""
    classifier = context.version.task == "text-classification"
    labels = _label_ids(network)
    for which in ("training", "eval"):
        usable = [
            example
            for example in context.read_examples(which)
            if isinstance(example.get("text"), str)
            and (not classifier or str(example.get("label")) in labels)
        ]
        if usable:
            if len(usable) > IMPORTANCE_EXAMPLES:
                sampler = random.Random(SEED)  # noqa: S311 - a reproducible sample, not a secret
                usable = sampler.sample(usable, IMPORTANCE_EXAMPLES)
            return usable, which
    return [], ""


def current_heads(network: PreTrainedModel) -> list[tuple[int, ...]]:
    """Per layer, the parent heads (indices of the unpruned model) each layer now has."""
    from openmaas.runtimes.transformers_heads import HeadPrunedSelfAttention, attention_blocks

    count = int(network.config.num_attention_heads)
    heads: list[tuple[int, ...]] = []
    for block in attention_blocks(network):
        attention = block.get_submodule("self")
        heads.append(
            attention.heads
            if isinstance(attention, HeadPrunedSelfAttention)
            else tuple(range(count))
        )
    return heads


def prune_heads(network: PreTrainedModel, keep: Sequence[Sequence[int]]) -> None:
    """Keep, in each layer, the heads at positions `keep[layer]` (of those it has now), with
    their weights; writes the kept parent heads into the config. Changes `network` in place."""
    import torch

    from openmaas.runtimes.transformers_heads import HeadPrunedSelfAttention, attention_blocks

    config = network.config
    width = config.hidden_size // config.num_attention_heads
    kept_heads: list[list[int]] = []
    for index, (block, heads, positions) in enumerate(
        zip(attention_blocks(network), current_heads(network), keep, strict=True)
    ):
        old: Any = block.get_submodule("self")
        dense: torch.nn.Linear = block.get_submodule("output.dense")  # type: ignore[assignment]
        rows = torch.cat([torch.arange(p * width, (p + 1) * width) for p in positions])
        new = HeadPrunedSelfAttention(config, [heads[p] for p in positions], layer_idx=index)
        new_dense = torch.nn.Linear(len(rows), dense.out_features, bias=dense.bias is not None)
        with torch.no_grad():
            for name in ("query", "key", "value"):
                source, target = getattr(old, name), getattr(new, name)
                target.weight.copy_(source.weight[rows])
                target.bias.copy_(source.bias[rows])
            new_dense.weight.copy_(dense.weight[:, rows])
            if dense.bias is not None:
                new_dense.bias.copy_(dense.bias)
        new.train(old.training)
        block.self = new
        block.output.dense = new_dense  # type: ignore[union-attr]
        kept_heads.append(list(new.heads))
    setattr(config, KEPT_HEADS, kept_heads)


def choose_heads(
    importance: Sequence[torch.Tensor], sparsity: float, scope: str, heads_per_layer: int | None
) -> list[list[int]]:
    """Positions of the heads to keep in each layer (sorted), from each layer's importances:
    `heads_per_layer` in each, or `sparsity` of them removed (by layer, or over all layers
    with every layer keeping at least one)."""
    if heads_per_layer is not None or scope == "layer":
        return [
            sorted(row.topk(_layer_count(len(row), sparsity, heads_per_layer)).indices.tolist())
            for row in importance
        ]
    total = sum(len(row) for row in importance)
    keep_total = max(len(importance), total - round(sparsity * total))
    # Each layer's best head first, then the rest by importance over all layers.
    chosen = {(layer, int(row.argmax())) for layer, row in enumerate(importance)}
    ranked = sorted(
        (
            (float(value), layer, head)
            for layer, row in enumerate(importance)
            for head, value in enumerate(row.tolist())
        ),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    for _, layer, head in ranked:
        if len(chosen) >= keep_total:
            break
        chosen.add((layer, head))
    return [sorted(h for layer, h in chosen if layer == row) for row in range(len(importance))]


def _layer_count(heads: int, sparsity: float, heads_per_layer: int | None) -> int:
    if heads_per_layer is not None:
        return min(heads_per_layer, heads)
    return max(1, heads - round(sparsity * heads))


def weight_importance(network: PreTrainedModel) -> list[torch.Tensor]:
    """Per layer, per head: ||value rows of the head|| * ||output columns that read it||."""
    import torch

    from openmaas.runtimes.transformers_heads import attention_blocks

    config = network.config
    width = config.hidden_size // config.num_attention_heads
    rows = []
    with torch.no_grad():
        for block in attention_blocks(network):
            value: torch.Tensor = block.get_submodule("self.value").weight  # type: ignore[assignment]
            output: torch.Tensor = block.get_submodule("output.dense").weight  # type: ignore[assignment]
            heads = value.shape[0] // width
            rows.append(
                torch.stack(
                    [
                        value[h * width : (h + 1) * width].norm()
                        * output[:, h * width : (h + 1) * width].norm()
                        for h in range(heads)
                    ]
                )
            )
    return rows


def gradient_importance(
    context: BuildContext, network: PreTrainedModel, tokenizer: Any, examples: Sequence[Any]
) -> list[torch.Tensor]:
    """Per layer, per head: Michel et al.'s E|∂L/∂ξ_h| over `examples`, normalised by layer. The
    network is left head-pruned-layout with every head it had (same outputs), gates removed."""
    import torch

    from openmaas.runtimes.base import ModelSource
    from openmaas.runtimes.transformers_encoders import Pooling, pool
    from openmaas.runtimes.transformers_heads import attention_blocks

    prune_heads(network, [range(len(heads)) for heads in current_heads(network)])
    attentions: list[Any] = [block.get_submodule("self") for block in attention_blocks(network)]
    gates = [torch.ones(len(a.heads), requires_grad=True) for a in attentions]
    for attention, gate in zip(attentions, gates, strict=True):
        attention.gate = gate
    classifier = context.version.task == "text-classification"
    label_ids = _label_ids(network) if classifier else {}
    generator = torch.Generator().manual_seed(SEED)
    totals = [torch.zeros(len(a.heads)) for a in attentions]
    pooling = Pooling.for_source(
        ModelSource.from_version(context.version, context.parent.directory)
    )
    module: torch.nn.Module = network
    try:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        for start in range(0, len(examples), IMPORTANCE_BATCH):
            context.check_stop("while measuring head importance")
            batch = examples[start : start + IMPORTANCE_BATCH]
            inputs = tokenizer(
                [str(example["text"]) for example in batch],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            if classifier:
                labels = torch.tensor([label_ids[str(example["label"])] for example in batch])
                loss = network(**inputs, labels=labels).loss
            else:
                hidden = network(**inputs).last_hidden_state
                pooled = pool(hidden, inputs["attention_mask"], pooling.mode)
                projection = torch.randn(pooled.shape, generator=generator)
                loss = (pooled * projection).sum()
            grads = torch.autograd.grad(loss, gates)
            for total, grad in zip(totals, grads, strict=True):
                total += grad.abs()
    finally:
        for attention in attentions:
            attention.gate = None
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    return [total / total.norm().clamp_min(1e-12) for total in totals]


def _label_ids(network: PreTrainedModel) -> dict[str, int]:
    return {str(label): int(index) for index, label in dict(network.config.id2label or {}).items()}
