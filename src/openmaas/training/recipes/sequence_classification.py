"""What the two recipes over a registered transformer share: the base model loaded with a
fresh classification head for the data's labels, batches tokenized for it, and the result
written as a standard Hugging Face `AutoModelForSequenceClassification` directory (safetensors,
`id2label`/`label2id`, the tokenizer) that the `transformers` runtime serves.

Example::

    network, tokenizer = load_sequence_classifier(ctx.base_model, labels, dropout=0.1)
    logits = forward_texts(network, tokenizer, ["a fine film"], max_length=128)
    save_sequence_classifier(ctx.output_dir, network, tokenizer)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from openmaas.runtimes.transformers_heads import from_pretrained as heads_from_pretrained
from openmaas.training.recipe import TrainingContext

# A job's event log is no place for per-file progress bars.
transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

RUNTIME = "transformers"
# A tokenizer's `model_max_length` past this is the library's "no limit" placeholder (1e30).
SANE_MODEL_MAX_LENGTH = 100_000
# Names configs give the dropout in front of the classification layer.
CLASSIFIER_DROPOUT_FIELDS = ("classifier_dropout", "seq_classif_dropout")
# Where architectures keep the final layer that maps features to one logit per label.
CLASSIFIER_PATHS = ("classifier", "classifier.out_proj", "score", "classification_head.out_proj")


Network = TypeVar("Network", bound=nn.Module, covariant=True)
Loaded = TypeVar("Loaded", bound=nn.Module)


class HeadLoader(Protocol[Network]):
    """`load_sequence_classifier`, `load_pooled_classifier` or `load_token_classifier`."""

    def __call__(
        self, base: Path, labels: Sequence[str], /, *, dropout: float
    ) -> tuple[Network, PreTrainedTokenizerBase]: ...


def base_with_new_head(
    ctx: TrainingContext, load: HeadLoader[Loaded], labels: Sequence[str], *, dropout: float
) -> tuple[Loaded, PreTrainedTokenizerBase, torch.device]:
    """The job's base model with a new head for `labels`, the head's initial weights drawn
    from the job's seed, on the job's device."""
    base = require_base_model(ctx)
    device = torch.device(ctx.device)
    torch.manual_seed(ctx.seed)
    network, tokenizer = load(base, labels, dropout=dropout)
    module: nn.Module = network  # through nn.Module: transformers annotates `to` oddly
    module.to(device)
    return network, tokenizer, device


def require_base_model(ctx: TrainingContext) -> Path:
    if ctx.base_model is None:
        raise ValueError("this recipe fine-tunes a registered model: give a base model")
    if not (ctx.base_model / "config.json").is_file():
        raise ValueError(
            f"the base model is not a Hugging Face directory (no config.json in {ctx.base_model})"
        )
    return ctx.base_model


def load_sequence_classifier(
    base: Path, labels: Sequence[str], *, dropout: float
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base encoder with a new head for `labels` (the head is initialized from the torch
    RNG: seed first)."""
    config = AutoConfig.from_pretrained(
        base,
        local_files_only=True,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="single_label_classification",
    )
    for name in CLASSIFIER_DROPOUT_FIELDS:
        if hasattr(config, name):
            setattr(config, name, dropout)
    # A head-pruned base (the prune method's `structure: heads`) loads through its own layout.
    network: PreTrainedModel = heads_from_pretrained(
        AutoModelForSequenceClassification,
        base,
        config=config,
        local_files_only=True,
        dtype=torch.float32,
    )
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(base, local_files_only=True)
    return network, tokenizer


class PooledClassifier(nn.Module):
    """A linear layer over an encoder's sentence embedding: the mean of its token vectors
    (padding left out), unnormalized, as the `transformers` runtime pools a plain Hugging
    Face directory. Sentence encoders are trained to put meaning there, where BERT's
    classification network reads the pooler over the first token, which such encoders leave
    untrained."""

    encoder: PreTrainedModel
    classifier: nn.Linear

    def __init__(self, encoder: PreTrainedModel, n_labels: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(int(encoder.config.hidden_size), n_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **rest: torch.Tensor
    ) -> torch.Tensor:
        hidden: torch.Tensor = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **rest
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits: torch.Tensor = self.classifier(self.dropout(pooled))
        return logits


def load_pooled_classifier(
    base: Path, labels: Sequence[str], *, dropout: float
) -> tuple[PooledClassifier, PreTrainedTokenizerBase]:
    """The base encoder (without any head it had) under a new linear layer for `labels`
    (initialized from the torch RNG: seed first)."""
    encoder: PreTrainedModel = heads_from_pretrained(
        AutoModel, base, local_files_only=True, dtype=torch.float32
    )
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(base, local_files_only=True)
    return PooledClassifier(encoder, len(labels), dropout), tokenizer


def classification_layer(network: nn.Module, n_labels: int) -> nn.Linear:
    """The layer producing the logits: a known path, else the last Linear with one output per
    label."""
    for path in CLASSIFIER_PATHS:
        try:
            layer = network.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layer, nn.Linear) and layer.out_features == n_labels:
            return layer
    linears = [
        m for m in network.modules() if isinstance(m, nn.Linear) and m.out_features == n_labels
    ]
    if not linears:
        raise ValueError(f"{type(network).__name__} has no layer with {n_labels} outputs")
    return linears[-1]


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {name: tensor.to(device) for name, tensor in encoded.items()}


def forward_texts(
    network: PreTrainedModel | PooledClassifier,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    device = device or next(network.parameters()).device
    inputs = tokenize(tokenizer, texts, max_length=max_length, device=device)
    if isinstance(network, PooledClassifier):
        pooled: torch.Tensor = network(**inputs)
        return pooled
    logits: torch.Tensor = network(**inputs).logits
    return logits


def served_max_length(network: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Where the `transformers` runtime cuts a text of this model: the tokenizer's declared
    limit, within the position table."""
    positions = getattr(network.config, "max_position_embeddings", None) or SANE_MODEL_MAX_LENGTH
    declared = tokenizer.model_max_length
    limit = int(declared) if 0 < declared < SANE_MODEL_MAX_LENGTH else int(positions)
    return min(limit, int(positions))


def token_counts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_length: int
) -> list[int]:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [len(ids) for ids in encoded["input_ids"]]


def save_pooled_classifier(
    directory: Path,
    network: PooledClassifier,
    tokenizer: PreTrainedTokenizerBase,
    labels: Sequence[str],
) -> None:
    """A `linear-head` version that carries its encoder: the fine-tuned encoder as a Hugging
    Face directory in `encoder/`, the linear layer beside it."""
    from openmaas.runtimes.linear_head import BUNDLED_ENCODER
    from openmaas.training.recipes.frozen_encoder import save_linear_head

    network.cpu()
    network.eval()
    network.encoder.save_pretrained(directory / BUNDLED_ENCODER)
    tokenizer.save_pretrained(directory / BUNDLED_ENCODER)
    save_linear_head(directory, network.classifier, labels, bundled_pooling="mean")


def save_sequence_classifier(
    directory: Path, network: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    module: nn.Module = network  # through nn.Module: transformers leaves these unannotated
    module.cpu()
    module.eval()
    network.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
