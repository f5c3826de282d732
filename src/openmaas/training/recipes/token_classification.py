"""Fine-tune a registered transformer encoder (e.g. the packaged MiniLM) for named entities:
a new token-classification head over the encoder, every weight trained at a small learning
rate with warmup and linear decay. The result is a Hugging Face
`AutoModelForTokenClassification` directory with the tags as `id2label`, which the
`transformers` runtime serves on `/v1/ner` (entity spans with character offsets).

Words are split into subwords by the base model's fast tokenizer; each word's first subword
learns the word's tag, and the later ones learn the tag that continues its entity (I-LOC;
`label_all_subwords`, on by default). Test metrics are entity precision, recall and F1 over
the data's words (read at each word's first subword), plus token accuracy.

Why later subwords learn a tag: the runtime splits a served text into words at whitespace
and punctuation, so a data word with punctuation inside ("U.S.") is several words there, and
those after the first are subwords. Left out of the loss (the usual `-100`, with
`label_all_subwords` false) they learn nothing and "U.S." may come back as the entity "U".
On CoNLL-2003 dev the F1 of the entities `/v1/ner` returned was 0.805 with them labelled and
0.755 without, the registered F1 unchanged (0.816, 0.818).

On the shared 2-core test machine (one torch thread) MiniLM-L6 fine-tuned on 1,800
CoNLL-2003 sentences for 2 epochs in 6 minutes, evaluation included: dev entity F1 0.818
(benchmarks/ner_quality.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.training.hyperparameters import boolean
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.tagging import TAGGING_DEFAULTS, TaggedSentences, TaggingRecipe

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from openmaas.training.token_loop import TaggedInput

DEFAULTS: dict[str, Any] = {
    **TAGGING_DEFAULTS,
    "n_epochs": 3,
    "batch_size": 16,
    "learning_rate": 5e-5,  # the usual BERT fine-tuning range is 2e-5 to 5e-5
    "warmup_ratio": 0.1,
    "schedule": "linear",
    "weight_decay": 0.01,
    "dropout": 0.1,  # in front of the token-classification layer
    "max_length": 128,  # subwords per sentence in training, [CLS] and [SEP] included
    "label_all_subwords": True,  # a word's later subwords learn I-X (False: left out, -100)
    "patience": 1,
    "checkpoint_every_steps": 100,  # a checkpoint holds the weights twice plus Adam's state
}

SubwordIds = tuple[int, ...]


class FinetuneTransformerNERRecipe(TaggingRecipe):
    name = "finetune_transformer_ner"
    needs_base_model = True
    description = "fine-tune a registered transformer encoder with a token-classification head"

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def check(self, hp: Mapping[str, Any]) -> None:
        boolean(hp, "label_all_subwords")
        if hp["augment"]:
            raise ValueError(
                "hyperparameter 'augment' must be false for this recipe: dropping or swapping "
                "words would move them away from their tags"
            )

    def train(self, ctx: TrainingContext) -> TrainingResult:

        from openmaas.training.recipes.sequence_classification import (
            RUNTIME,
            base_with_new_head,
            save_sequence_classifier,
            served_max_length,
        )
        from openmaas.training.recipes.tagging import TaggedSplits, tagging_result
        from openmaas.training.token_loop import evaluate_tagger, train_tagger

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        settings = self.loop_settings(hp)
        data = TaggedSplits.from_context(ctx)
        max_length = int(hp["max_length"])
        network, tokenizer, device = base_with_new_head(
            ctx, load_token_classifier, data.tags, dropout=hp["dropout"]
        )
        pad_id = int(tokenizer.pad_token_id or 0)
        continuation = data.continuation() if hp["label_all_subwords"] else None

        def encode(split: TaggedSentences, limit: int) -> list[TaggedInput[SubwordIds]]:
            return encode_sentences(tokenizer, split, continuation, max_length=limit)

        def forward(rows: Sequence[SubwordIds]) -> torch.Tensor:
            ids, mask = pad_subwords(rows, pad_id)
            logits: torch.Tensor = network(
                input_ids=ids.to(device), attention_mask=mask.to(device)
            ).logits
            return logits

        outcome = train_tagger(
            ctx,
            network=network,
            forward=forward,
            train=encode(data.train, max_length),
            validation=encode(data.validation, max_length),
            tags=data.tags,
            settings=settings,
        )

        # The registered metrics describe the model as served: sentences cut where the
        # transformers runtime cuts them, not at the training length.
        evaluated = data.evaluation_split()
        evaluation = None
        if evaluated is not None:
            served = served_max_length(network, tokenizer)
            evaluation = evaluate_tagger(
                network,
                forward,
                encode(evaluated[1], served),
                data.tags,
                should_stop=ctx.should_stop,
            )
        save_sequence_classifier(ctx.output_dir, network, tokenizer)
        return tagging_result(
            ctx,
            recipe=self.name,
            runtime=RUNTIME,
            hyperparameters=hp,
            tags=data.tags,
            outcome=outcome,
            evaluation=evaluation,
            evaluated_on=evaluated[0] if evaluated is not None else None,
        )


def load_token_classifier(
    base: Path, tags: Sequence[str], *, dropout: float
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base encoder with a new head for `tags` (initialized from the torch RNG: seed
    first) and its tokenizer, which must be a fast one: word ids come from it."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    from openmaas.runtimes.transformers_heads import from_pretrained as heads_from_pretrained
    from openmaas.training.recipes.sequence_classification import CLASSIFIER_DROPOUT_FIELDS

    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(base, local_files_only=True)
    if not tokenizer.is_fast:
        raise ValueError(
            "the base model has no fast tokenizer (tokenizer.json): aligning tags to subwords "
            "needs one"
        )
    config = AutoConfig.from_pretrained(
        base,
        local_files_only=True,
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id={tag: i for i, tag in enumerate(tags)},
    )
    for name in CLASSIFIER_DROPOUT_FIELDS:
        if hasattr(config, name):
            setattr(config, name, dropout)
    # A head-pruned base (the prune method's `structure: heads`) loads through its own layout.
    network: PreTrainedModel = heads_from_pretrained(
        AutoModelForTokenClassification,
        base,
        config=config,
        local_files_only=True,
        dtype=torch.float32,
    )
    return network, tokenizer


def encode_sentences(
    tokenizer: PreTrainedTokenizerBase,
    sentences: TaggedSentences,
    continuation: Sequence[int] | None,
    *,
    max_length: int,
) -> list[TaggedInput[SubwordIds]]:
    """Each sentence's subword ids (special tokens included, cut at `max_length`) with its
    tags on the first subword of each word (and `continuation` on the others, if given)."""
    from openmaas.training.token_loop import TaggedInput, align_tags

    if not len(sentences):
        return []
    encoded = tokenizer(
        [list(words) for words in sentences.words],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
    )
    return [
        TaggedInput(
            tuple(encoded["input_ids"][i]),
            align_tags(encoded.word_ids(i), tags, continuation=continuation),
        )
        for i, tags in enumerate(sentences.tags)
    ]


def pad_subwords(rows: Sequence[SubwordIds], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask), right-padded to the longest row."""
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
