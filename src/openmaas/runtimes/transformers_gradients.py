"""Integrated gradients for transformers classifiers and taggers: the text tokenized as the
model serves it (truncated to its limit), a baseline of padding with the special tokens
kept ([CLS] ... [SEP], as in Captum's BERT tutorial), attributions at the word embeddings
(positions and token types stay as in the text).

Example::

    tokens = attribute(model, "a gripping film", lambda logits: logits.softmax(-1)[:, 1], 32)
    tokens.offsets, tokens.scores
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from openmaas.runtimes.gradients import integrated_gradients, no_tokens_at, span_tokens
from openmaas.runtimes.transformers import TransformersModel
from openmaas.tasks.explanation import Target, TokenAttributions

# (batch, ...) logits -> (batch,): the explained probability, given the text's token offsets.
Objective = Callable[[torch.Tensor], torch.Tensor]
# Makes the objective from the text's token offsets (a tagger's depends on the span's tokens).
MakeObjective = Callable[[list[tuple[int, int]]], Objective]


def attribute(
    model: TransformersModel,
    text: str,
    objective: MakeObjective,
    steps: int,
) -> TokenAttributions:
    """`objective(offsets)` makes the scalar of the logits that is explained (a tagger's
    depends on which tokens the span covers)."""
    encoded = model.tokenize([text], return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets = [(int(start), int(end)) for start, end in encoded["offset_mapping"][0]]
    device = model.device
    ids = torch.tensor(encoded["input_ids"], dtype=torch.long, device=device)
    special = torch.tensor(encoded["special_tokens_mask"], dtype=torch.bool, device=device)
    baseline = ids.masked_fill(~special, model.tokenizer.pad_token_id or 0)
    names = [k for k in model.tokenizer.model_input_names if k != "input_ids" and k in encoded]
    extra = tuple(torch.tensor(encoded[k], dtype=torch.long, device=device) for k in names)
    network = model.network
    scalar = objective(offsets)

    def probability(ids: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(names, rest, strict=True))
        return scalar(network(input_ids=ids, **inputs).logits.float())

    scores, delta = integrated_gradients(
        probability, network.get_input_embeddings(), ids, baseline, extra, steps=steps
    )
    return TokenAttributions(tuple(offsets), tuple(scores), delta)


def classifier_objective(index: int, *, multi_label: bool) -> MakeObjective:
    def make(offsets: list[tuple[int, int]]) -> Objective:
        def scalar(logits: torch.Tensor) -> torch.Tensor:
            scores = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
            return scores[:, index]

        return scalar

    return make


def tagger_objective(target: Target, columns: list[int]) -> MakeObjective:
    assert target.span is not None  # a tagger's target has its characters
    span = target.span

    def make(offsets: list[tuple[int, int]]) -> Objective:
        positions = span_tokens(offsets, span)
        if not positions:
            raise no_tokens_at(target.label, span)

        def scalar(logits: torch.Tensor) -> torch.Tensor:
            probabilities = torch.softmax(logits, dim=-1)[:, positions][:, :, columns]
            return probabilities.sum(dim=-1).mean(dim=-1)

        return scalar

    return make
