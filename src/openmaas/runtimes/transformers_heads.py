"""Checkpoints of BERT-family encoders with fewer attention heads: our own self-attention
module, and loading such a checkpoint through it.

transformers 5 no longer prunes heads (`prune_heads` and `config.pruned_heads` are gone), and
its BERT attention sizes every head as hidden_size / num_attention_heads from the config, so a
checkpoint whose query/key/value projections hold fewer heads does not load with plain
`from_pretrained`. A head-pruned checkpoint therefore says which heads each layer kept, under
our own config key (`KEPT_HEADS`: per layer, the parent's head indices, in order), and keeps
the parent's `num_attention_heads` (so the head width stays hidden_size / num_attention_heads).
`from_pretrained` here builds the model class with `HeadPrunedSelfAttention` swapped into
every layer, and the smaller attention output projection, before the weights load; the rest
of `from_pretrained` (dtype, devices, tied weights, missing keys) stays the library's.
Checkpoints without the key load exactly as before.

The swapped module keeps the names of the one it replaces (`attention.self.query`, `.key`,
`.value`), so the saved tensors keep their names and only their shapes change. It attends
through transformers' attention functions (SDPA when serving; our eager one for ONNX export).

Example::

    network = from_pretrained(AutoModelForSequenceClassification, directory, dtype=torch.float32)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from openmaas.runtimes.kept_heads import BERT_FAMILY, KEPT_HEADS, kept_heads_of

# What transformers' attention blocks pass their self-attention that an encoder never uses.
UNUSED_BY_ENCODERS = ("encoder_hidden_states", "encoder_attention_mask", "cache", "past_key_values")


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention over (batch, heads, tokens, width) inputs; output (batch, tokens,
    heads, width). The mask is additive (what transformers builds for `eager`)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class HeadPrunedSelfAttention(nn.Module):
    """BERT self-attention over a subset of the heads: `query`, `key` and `value` project to
    len(heads) * head width. `gate`, when set (a tensor of one weight per kept head), scales
    each head's output: head importance is its gradient (Michel et al., 2019)."""

    def __init__(self, config: Any, heads: Sequence[int], layer_idx: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.heads = tuple(int(head) for head in heads)
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.num_attention_heads = len(self.heads)
        width = self.num_attention_heads * self.attention_head_size
        self.all_head_size = width
        self.scaling = self.attention_head_size**-0.5
        self.query = nn.Linear(config.hidden_size, width)
        self.key = nn.Linear(config.hidden_size, width)
        self.value = nn.Linear(config.hidden_size, width)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.is_causal = False
        self.is_decoder = False
        self.layer_idx = layer_idx
        self.gate: torch.Tensor | None = None

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for name in UNUSED_BY_ENCODERS:
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"a head-pruned encoder layer takes no {name}")
        tokens = hidden_states.shape[:-1]
        shape = (*tokens, -1, self.attention_head_size)
        query = self.query(hidden_states).view(shape).transpose(1, 2)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention
        )
        output, weights = attend(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        if self.gate is not None:
            output = output * self.gate.view(1, 1, -1, 1)
        return output.reshape(*tokens, -1).contiguous(), weights


def attention_blocks(network: PreTrainedModel) -> list[nn.Module]:
    """Every encoder layer's attention block (`.self` and `.output.dense` inside)."""
    base: nn.Module = network.base_model
    layers = base.get_submodule("encoder.layer")
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(network).__name__} keeps no list of layers at encoder.layer")
    return [layer.get_submodule("attention") for layer in layers]


def install_kept_heads(network: PreTrainedModel, kept: Sequence[Sequence[int]]) -> None:
    """Swap in a `HeadPrunedSelfAttention` of each layer's kept heads and an output projection
    that reads only them. The new tensors are uninitialised (weights load after); this is for
    building the model a head-pruned checkpoint loads into."""
    blocks = attention_blocks(network)
    if len(blocks) != len(kept):
        raise ValueError(f"{KEPT_HEADS} lists {len(kept)} layers; the model has {len(blocks)}")
    for index, (block, heads) in enumerate(zip(blocks, kept, strict=True)):
        attention = HeadPrunedSelfAttention(network.config, heads, layer_idx=index)
        dense: nn.Linear = block.get_submodule("output.dense")  # type: ignore[assignment]
        block.self = attention
        block.output.dense = nn.Linear(  # type: ignore[union-attr]
            attention.all_head_size, dense.out_features, bias=dense.bias is not None
        )


def from_pretrained(auto_class: Any, directory: Path | str, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained(directory, **kwargs)`, through the head-pruned layout when
    the checkpoint's config records kept heads."""
    if kept_heads_of(Path(directory)) is None:
        return auto_class.from_pretrained(directory, **kwargs)
    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(
        directory, local_files_only=True
    )
    return model_class(auto_class, config).from_pretrained(directory, config=config, **kwargs)


def from_config(auto_class: Any, config: Any) -> Any:
    """`auto_class.from_config(config)`, head-pruned when the config records kept heads."""
    if getattr(config, KEPT_HEADS, None) is None:
        return auto_class.from_config(config)
    return model_class(auto_class, config)._from_config(config)  # type: ignore[no-untyped-call]


def model_class(auto_class: Any, config: Any) -> type[PreTrainedModel]:
    """The class `auto_class` picks for `config`, building its layers head-pruned."""
    from transformers.models.auto.auto_factory import _get_model_class

    model_type = getattr(config, "model_type", None)
    if model_type not in BERT_FAMILY:
        raise ValueError(
            f"{KEPT_HEADS} in a {model_type} config: head-pruned checkpoints are BERT-family "
            f"encoders ({', '.join(sorted(BERT_FAMILY))})"
        )
    base = _get_model_class(config, auto_class._model_mapping)  # type: ignore[no-untyped-call]
    return _head_pruned(base)


@functools.cache
def _head_pruned(base: type[PreTrainedModel]) -> type[PreTrainedModel]:
    def __init__(self: PreTrainedModel, config: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, config, *args, **kwargs)
        install_kept_heads(self, getattr(config, KEPT_HEADS))

    # Named as its base: `save_pretrained` records the class name as the architecture.
    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__})
