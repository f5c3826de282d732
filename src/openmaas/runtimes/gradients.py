"""Integrated gradients for the runtimes whose networks are torch: Captum's
`LayerIntegratedGradients` at the word embeddings, from a baseline of padding (special
tokens kept) to the text, of one scalar per input: the explained label's probability.

The path's points run through the network in passes of at most `MAX_PATH_TOKENS_PER_PASS`
tokens (steps times the text's tokens), so a long text costs more passes, not more memory.

Example::

    scores, delta = integrated_gradients(
        lambda ids, lengths: torch.softmax(network(ids, lengths), -1)[:, label],
        network.embedding, ids, torch.zeros_like(ids), (lengths,), steps=32,
    )
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from openmaas.errors import InvalidRequest
from openmaas.tasks.explanation import tag_kind

MAX_PATH_TOKENS_PER_PASS = 8192


def integrated_gradients(
    objective: Callable[..., torch.Tensor],
    layer: nn.Module,
    ids: torch.Tensor,
    baseline: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
    *,
    steps: int,
) -> tuple[list[float], float]:
    """Per token of `ids` (shape (1, tokens)), its attribution to `objective(ids, *extra)`
    (shape (batch,)) at the output of `layer`; and the approximation error: the attributions'
    sum against objective(ids) - objective(baseline)."""
    from captum.attr import LayerIntegratedGradients  # imported on first use: it is large

    per_pass = max(1, min(steps, MAX_PATH_TOKENS_PER_PASS // max(1, ids.shape[1])))
    attribution = LayerIntegratedGradients(objective, layer)
    with torch.enable_grad():
        scores, delta = attribution.attribute(
            ids,
            baselines=baseline,
            additional_forward_args=extra,
            n_steps=steps,
            internal_batch_size=per_pass,
            return_convergence_delta=True,
        )
    per_token = scores.sum(dim=-1)[0].detach().float().cpu().tolist()
    return [float(s) for s in per_token], float(delta.abs().max())


def tag_columns(labels: Sequence[str], kind: str) -> list[int]:
    """The tagger's output columns whose tags are of this entity type (B-X, I-X, X, ...)."""
    return [i for i, tag in enumerate(labels) if tag_kind(tag) == kind]


def span_tokens(offsets: Sequence[tuple[int, int]], span: tuple[int, int]) -> list[int]:
    """The positions of the tokens whose characters overlap `span`."""
    return [
        i
        for i, (start, end) in enumerate(offsets)
        if end > start and start < span[1] and end > span[0]
    ]


def tagged_probability(
    logits: torch.Tensor, positions: Sequence[int], columns: Sequence[int]
) -> torch.Tensor:
    """(batch, tokens, tags) logits -> (batch,): the mean, over `positions`, of the
    probability of the `columns` tags (an entity type's)."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    chosen: torch.Tensor = probabilities[:, list(positions)][:, :, list(columns)]
    return chosen.sum(dim=-1).mean(dim=-1)


def no_tokens_at(label: str, span: tuple[int, int]) -> InvalidRequest:
    return InvalidRequest(
        f"span [{span[0]}, {span[1]}] covers no token the model reads (whitespace, or past "
        f"its input limit): give the characters of a word to explain {label} there",
        param="span",
    )


def word_embeddings(network: nn.Module) -> nn.Module:
    """The word embedding table of an `openmaas.nn` network (`embedding`, or the encoder's
    `tokens`)."""
    for name in ("embedding", "tokens"):
        layer = getattr(network, name, None)
        if isinstance(layer, nn.Embedding):
            return layer
    raise TypeError(f"{type(network).__name__} has no word embeddings to attribute at")
