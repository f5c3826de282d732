"""A BiLSTM tagger trained from scratch for named entities: embeddings of a word-level
vocabulary of the training sentences plus each piece's casing, a bidirectional LSTM, dropout
and a softmax over the tags at every piece (`openmaas.nn.tagger`). Saved in the `openmaas-nn`
format (safetensors, tokenizer.json, openmaas.json; no pickle) and served by the `openmaas-nn`
runtime on `/v1/ner`.

Sentences are joined with spaces and cut into pieces as a served text is (`encode_texts`). A
word the tokenizer splits ("U.S." into u . s .) has its tag on its first piece and the tag
that continues its entity on the others: the runtime tags every piece it sees, so a served
"U.S." comes back whole. The metrics count the data's words, read at their first pieces.

On the shared 2-core test machine (one torch thread) it trained on all 13,541 CoNLL-2003
training sentences for 5 epochs in under 3 minutes: dev entity F1 0.842
(benchmarks/ner_quality.py).

`augment` replaces training words by the unknown word at random (Lample et al. 2016 do so
with singletons): the network learns to tag names it has never seen from casing and context.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from openmaas.training.hyperparameters import (
    VOCABULARY_DEFAULTS,
    boolean,
    check_vocabulary,
    positive_int,
)
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.tagging import TAGGING_DEFAULTS, TaggedSentences, TaggingRecipe

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from openmaas.nn.tagger import Pieces
    from openmaas.training.token_loop import TaggedInput

ARCHITECTURE = "rnn-tagger"
UNKNOWN_WORD_RATE = 0.1  # share of training pieces `augment` replaces by the unknown word

DEFAULTS: dict[str, Any] = {
    **TAGGING_DEFAULTS,
    **VOCABULARY_DEFAULTS,
    "n_epochs": 10,
    "batch_size": 32,
    "learning_rate": 5e-3,
    "dropout": 0.5,  # on the inputs and on the LSTM's outputs
    "max_length": 128,  # pieces per sentence in training
    "embedding_dim": 100,
    "casing_dim": 16,
    "hidden_size": 128,  # per direction
    "n_layers": 1,
    "bidirectional": True,
    "patience": 2,
    "checkpoint_every_steps": 500,
}


class BiLSTMTaggerRecipe(TaggingRecipe):
    name = "bilstm_tagger"
    batch_size_scales_with_data = True
    description = "BiLSTM tagger from scratch over words and their casing (NER)"
    search_space = {
        "learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True},
        "dropout": {"type": "float", "low": 0.1, "high": 0.6},
        "hidden_size": {"type": "categorical", "choices": [64, 128, 256]},
    }

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def check(self, hp: Mapping[str, Any]) -> None:
        check_vocabulary(hp)
        for name in ("embedding_dim", "casing_dim", "hidden_size", "n_layers"):
            positive_int(hp, name)
        boolean(hp, "bidirectional")

    def train(self, ctx: TrainingContext) -> TrainingResult:
        import torch

        from openmaas.nn.saved import LONGEST_INPUT_TOKENS, RUNTIME, save_classifier
        from openmaas.nn.tagger import RNNTagger, RNNTaggerConfig, pad_pieces
        from openmaas.nn.vocab import vocabulary_size
        from openmaas.training.pretrained_embeddings import (
            dimension_for,
            install,
            load_pretrained,
        )
        from openmaas.training.recipes.tagging import TASK, TaggedSplits, tagging_result
        from openmaas.training.recipes.word_level import prepare_vocabulary, with_embeddings
        from openmaas.training.token_loop import evaluate_tagger, train_tagger

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        settings = self.loop_settings(hp)
        torch.manual_seed(ctx.seed)
        data = TaggedSplits.from_context(ctx)
        texts = [words_text(words)[0] for words in data.train.words]
        tokenizer, tokenizer_file = prepare_vocabulary(ctx, texts, hp)
        continuation = data.continuation()
        max_length = int(hp["max_length"])
        device = torch.device(ctx.device)

        def encode(split: TaggedSentences, limit: int) -> list[TaggedInput[Pieces]]:
            return encode_sentences(tokenizer, split, continuation, max_length=limit)

        train = encode(data.train, max_length)
        train_ids = [sentence.inputs.ids for sentence in train]
        pretrained = load_pretrained(ctx, hp, tokenizer, train_ids)
        network = RNNTagger(
            RNNTaggerConfig(
                vocab_size=vocabulary_size(tokenizer),
                n_labels=len(data.tags),
                embedding_dim=dimension_for(ctx, pretrained, hp, "embedding_dim"),
                casing_dim=hp["casing_dim"],
                hidden_size=hp["hidden_size"],
                n_layers=hp["n_layers"],
                bidirectional=hp["bidirectional"],
                dropout=hp["dropout"],
            )
        )
        install(network.embedding, pretrained)
        network.to(device)

        def forward(rows: Sequence[Pieces]) -> torch.Tensor:
            ids, casing, lengths = pad_pieces(rows)
            logits: torch.Tensor = network(ids.to(device), lengths, casing.to(device))
            return logits

        outcome = train_tagger(
            ctx,
            network=network,
            forward=forward,
            train=train,
            validation=encode(data.validation, max_length),
            tags=data.tags,
            settings=settings,
            augment=unknown_words,
            checkpoint_files=[tokenizer_file],
        )
        # The registered metrics describe the model as served: sentences cut where the
        # server cuts them, not at the training length.
        evaluated = data.evaluation_split()
        evaluation = None
        if evaluated is not None:
            evaluation = evaluate_tagger(
                network,
                forward,
                encode(evaluated[1], LONGEST_INPUT_TOKENS),
                data.tags,
                should_stop=ctx.should_stop,
            )
        save_classifier(
            ctx.output_dir,
            ARCHITECTURE,
            network.cpu().eval(),
            tokenizer,
            labels=data.tags,
            max_input_tokens=LONGEST_INPUT_TOKENS,
            extra={"recipe": self.name, "trained_max_length": max_length},
            task=TASK,
        )
        result = tagging_result(
            ctx,
            recipe=self.name,
            runtime=RUNTIME,
            hyperparameters=hp,
            tags=data.tags,
            outcome=outcome,
            evaluation=evaluation,
            evaluated_on=evaluated[0] if evaluated is not None else None,
            params={"architecture": ARCHITECTURE},
        )
        return with_embeddings(result, pretrained)


def words_text(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words joined by spaces, and each word's character span in that text."""
    spans = []
    position = 0
    for word in words:
        spans.append((position, position + len(word)))
        position += len(word) + 1
    return " ".join(words), spans


def piece_words(pieces: Pieces, spans: Sequence[tuple[int, int]]) -> list[int | None]:
    """Per piece, the index of the word its first character is in (None for an empty
    piece); pieces and words both run left to right."""
    found: list[int | None] = []
    word = 0
    for start, end in pieces.offsets:
        while word < len(spans) and spans[word][1] <= start:
            word += 1
        inside = end > start and word < len(spans) and spans[word][0] <= start
        found.append(word if inside else None)
    return found


def encode_sentences(
    tokenizer: Tokenizer,
    sentences: TaggedSentences,
    continuation: Sequence[int],
    *,
    max_length: int,
) -> list[TaggedInput[Pieces]]:
    """Each sentence's pieces (cut at `max_length`) with its tags aligned to them."""
    from openmaas.nn.tagger import encode_texts
    from openmaas.training.token_loop import TaggedInput, align_tags

    joined = [words_text(words) for words in sentences.words]
    rows = encode_texts(tokenizer, [text for text, _ in joined], max_length=max_length)
    return [
        TaggedInput(row, align_tags(piece_words(row, spans), tags, continuation=continuation))
        for row, (_, spans), tags in zip(rows, joined, sentences.tags, strict=True)
    ]


def unknown_words(pieces: Pieces, rng: random.Random) -> Pieces:
    """`pieces` with each word replaced by the unknown word at `UNKNOWN_WORD_RATE` (casing
    kept)."""
    from openmaas.nn.vocab import UNKNOWN_ID

    ids = tuple(UNKNOWN_ID if rng.random() < UNKNOWN_WORD_RATE else i for i in pieces.ids)
    return dataclasses.replace(pieces, ids=ids)
