"""The pipeline of the networks trained from scratch over a word-level vocabulary (TextCNN,
BiLSTM, GRU, the small Transformer encoder): seed, labels, vocabulary and the pretrained
word vectors the job names (`embeddings`) first, then the recipe builds its network, then
the shared loop, the test metrics and the servable `openmaas-nn` directory.

Example::

    run = WordLevelRun.prepare(ctx, hp)
    width = run.embedding_width("embedding_dim")  # the vectors' when the job names some
    network = TextCNN(TextCNNConfig(vocab_size=run.vocab_size, n_labels=len(run.labels),
                                    embedding_dim=width))
    return run.train_and_save("textcnn", "textcnn", network, max_input_tokens=4096,
                              embedding=network.embedding)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from openmaas.nn.saved import RUNTIME, TOKENIZER_FILE, min_length, save_classifier
from openmaas.nn.vocab import build_vocabulary, pad_batch, token_ids, vocabulary_size
from openmaas.training.hyperparameters import LoopSettings, positive_int
from openmaas.training.loop import LabeledItems, augment_text, evaluate, train_classifier
from openmaas.training.pretrained_embeddings import (
    PretrainedEmbeddings,
    dimension_for,
    install,
    load_pretrained,
)
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.classification import LabeledSplits, classification_result


def prepare_vocabulary(
    ctx: TrainingContext, texts: Sequence[str], hp: Mapping[str, Any]
) -> tuple[Tokenizer, Path]:
    """The vocabulary of the training `texts` (or, on resume, the checkpoint's), saved in the
    work directory: (tokenizer, its file, to copy into every checkpoint)."""
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_file = ctx.work_dir / TOKENIZER_FILE
    resumed = ctx.resume_from.directory / TOKENIZER_FILE if ctx.resume_from else None
    if resumed is not None and resumed.is_file():
        # The checkpoint's weights index this vocabulary, whatever a rebuild would give.
        tokenizer = Tokenizer.from_file(str(resumed))
    else:
        tokenizer = build_vocabulary(
            texts,
            max_size=positive_int(hp, "max_vocab_size"),
            min_frequency=positive_int(hp, "min_frequency"),
        )
        ctx.message(f"vocabulary: {vocabulary_size(tokenizer)} words")
    partial = tokenizer_file.with_suffix(".partial")
    tokenizer.save(str(partial))
    os.replace(partial, tokenizer_file)
    return tokenizer, tokenizer_file


@dataclass(frozen=True, slots=True)
class WordLevelRun:
    ctx: TrainingContext
    hp: Mapping[str, Any]
    settings: LoopSettings
    data: LabeledSplits
    tokenizer: Tokenizer
    tokenizer_file: Path  # copied into every checkpoint
    max_length: int
    train_rows: list[list[int]]  # the training texts' ids, cut at max_length
    pretrained: PretrainedEmbeddings | None  # the `embeddings` the job names

    @classmethod
    def prepare(cls, ctx: TrainingContext, hp: Mapping[str, Any]) -> WordLevelRun:
        """Seed torch, index the labels and load (on resume) or build the vocabulary."""
        settings = LoopSettings.from_hyperparameters(hp)
        torch.manual_seed(ctx.seed)
        data = LabeledSplits.from_context(ctx)
        tokenizer, tokenizer_file = prepare_vocabulary(ctx, data.train.texts, hp)
        max_length = positive_int(hp, "max_length")
        train_rows = token_ids(tokenizer, data.train.texts, max_length=max_length)
        return cls(
            ctx=ctx,
            hp=hp,
            settings=settings,
            data=data,
            tokenizer=tokenizer,
            tokenizer_file=tokenizer_file,
            max_length=max_length,
            train_rows=train_rows,
            pretrained=load_pretrained(ctx, hp, tokenizer, train_rows),
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.data.labels

    @property
    def vocab_size(self) -> int:
        return vocabulary_size(self.tokenizer)

    def embedding_width(self, name: str) -> int:
        """Hyperparameter `name` (the embedding width), or the pretrained vectors' width."""
        return dimension_for(self.ctx, self.pretrained, self.hp, name)

    def train_and_save(
        self,
        recipe: str,
        architecture: str,
        network: nn.Module,
        *,
        max_input_tokens: int,
        embedding: nn.Embedding,
    ) -> TrainingResult:
        """Start `embedding` (the network's word embeddings) from the pretrained vectors, if
        any; train `network` with the shared loop, evaluate it and write the servable model."""
        ctx, data = self.ctx, self.data
        install(embedding, self.pretrained)
        device = torch.device(ctx.device)
        network.to(device)
        padded_to = min_length(network)
        # DistributedDataParallel on a data-parallel run (its gradients averaged across
        # ranks); the network itself otherwise. The loop steps and saves `network`.
        model = ctx.wrap_network(network)

        def forward_at(max_length: int) -> Callable[[Sequence[str]], torch.Tensor]:
            def forward(texts: Sequence[str]) -> torch.Tensor:
                rows = token_ids(self.tokenizer, texts, max_length=max_length)
                ids, lengths = pad_batch(rows, min_length=padded_to)
                logits: torch.Tensor = model(ids.to(device), lengths)
                return logits

            return forward

        outcome = train_classifier(
            ctx,
            network=network,
            forward=forward_at(self.max_length),
            train=LabeledItems(data.train.texts, data.train.labels),
            validation=LabeledItems(data.validation.texts, data.validation.labels),
            labels=data.labels,
            settings=self.settings,
            augment=augment_text,
            item_tokens=[len(row) for row in self.train_rows],
            checkpoint_files=[self.tokenizer_file],
        )
        # The registered metrics describe the model as served: texts cut where the server
        # cuts them, not at the training length.
        evaluated = data.evaluation_split()
        evaluation = None
        if evaluated is not None:
            split = evaluated[1]
            items = LabeledItems(split.texts, split.labels)
            evaluation = evaluate(
                network,
                forward_at(max_input_tokens),
                items,
                data.labels,
                should_stop=ctx.should_stop,
            )
        save_classifier(
            ctx.output_dir,
            architecture,
            network.cpu().eval(),
            self.tokenizer,
            labels=data.labels,
            max_input_tokens=max_input_tokens,
            extra={"recipe": recipe, "trained_max_length": self.max_length},
        )
        result = classification_result(
            ctx,
            recipe=recipe,
            runtime=RUNTIME,
            hyperparameters=self.hp,
            labels=data.labels,
            outcome=outcome,
            evaluation=evaluation,
            evaluated_on=evaluated[0] if evaluated is not None else None,
            params={"architecture": architecture},
        )
        return with_embeddings(result, self.pretrained)


def with_embeddings(
    result: TrainingResult, pretrained: PretrainedEmbeddings | None
) -> TrainingResult:
    """`result` with the starting vectors' coverage among its metrics and params."""
    if pretrained is None:
        return result
    return dataclasses.replace(
        result,
        metrics={**result.metrics, **pretrained.metrics()},
        params={**result.params, "embeddings": pretrained.describe()},
    )
