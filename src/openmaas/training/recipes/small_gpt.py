"""A small GPT-2 trained from scratch on the job's texts: a byte-level BPE tokenizer learned
from the training split, then a causal language model on next-token loss over packed
blocks of `n_positions` tokens. Chat files train as their ChatML rendering, and the saved
tokenizer carries the matching chat template, so the result answers `/v1/chat/completions`
(stopping at <|im_end|>) as well as `/v1/completions`, served by the `transformers` runtime.

The registered metrics are the test split's next-token loss and perplexity (validation's
when there is no test split). Perplexities of different jobs compare only under the same
tokenizer: a larger vocabulary predicts fewer, harder tokens.

Example::

    recipe = SmallGPTRecipe()
    hp = recipe.resolve({"n_layer": 2, "n_embd": 64, "vocab_size": 500}, n_examples=300)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openmaas.training.hyperparameters import (
    COMMON_DEFAULTS,
    LoopSettings,
    fraction,
    positive_int,
)
from openmaas.training.recipe import Example, Recipe, TrainingContext, TrainingResult

TASK = "text-generation"
# The loop's settings this recipe does not expose: AdamW always, early stopping on the
# validation loss, and no class weighting or word-dropping augmentation (texts have no class).
FIXED_LOOP_SETTINGS: dict[str, Any] = {
    "optimizer": "adamw",
    "momentum": 0.9,
    "early_stopping_metric": "loss",
    "class_weighting": "none",
    "augment": False,
}
LOOP_NAMES = (
    "n_epochs",
    "batch_size",
    "learning_rate",
    "learning_rate_multiplier",
    "weight_decay",
    "dropout",
    "warmup_ratio",
    "schedule",
    "max_grad_norm",
    "patience",
    "early_stopping_min_delta",
    "checkpoint_every_steps",
)
MIN_POSITIONS = 8  # a context shorter than this leaves no room for a prompt and its answer
MIN_VOCAB_SIZE = 256 + 3  # byte-level BPE starts from every byte; 3 special tokens

DEFAULTS: dict[str, Any] = {
    **{name: COMMON_DEFAULTS[name] for name in LOOP_NAMES},
    "n_epochs": 10,
    "batch_size": 16,  # blocks of n_positions tokens per optimizer step
    "learning_rate": 1e-3,  # small models from scratch train well at 1e-3 (nanoGPT)
    "weight_decay": 0.1,  # on matrices only (GPT-2, nanoGPT)
    "dropout": 0.1,  # on embeddings, attention and residuals
    "warmup_ratio": 0.05,
    "schedule": "cosine",
    # Epochs without a lower validation loss before stopping; 0 trains every epoch. Either
    # way the weights of the lowest validation loss are the ones saved. At a high learning
    # rate the loss of a small model jumps about for a few epochs before it falls again.
    "patience": 0,
    # The tokenizer: byte-level BPE over the training texts, special tokens included.
    "vocab_size": 4000,
    "min_frequency": 2,  # occurrences of a pair before it becomes a merge
    # The network (GPT-2's names): 1.3 M parameters at these sizes, about 3,800 training
    # tokens a second on one CPU core (256 wide, 256 positions and 8,000 tokens: 5.3 M and
    # about 900); see docs/training.md.
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,  # a multiple of n_head
    "n_positions": 128,  # tokens per training block, and the served context length
}


class SmallGPTRecipe(Recipe):
    name = "gpt"
    tasks = (TASK,)
    description = "a small GPT-2 with its own byte-level BPE tokenizer, trained from scratch"

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def resolve(self, given: Mapping[str, Any], n_examples: int) -> dict[str, Any]:
        hp = super().resolve(given, n_examples)
        self.loop_settings(hp)
        fraction(hp, "dropout")
        if positive_int(hp, "vocab_size") < MIN_VOCAB_SIZE:
            raise ValueError(
                f"hyperparameter 'vocab_size' must be at least {MIN_VOCAB_SIZE} (256 bytes and "
                f"3 special tokens), got {hp['vocab_size']}"
            )
        positive_int(hp, "min_frequency")
        positive_int(hp, "n_layer")
        if positive_int(hp, "n_embd") % positive_int(hp, "n_head"):
            raise ValueError(
                f"hyperparameter 'n_embd' ({hp['n_embd']}) must be a multiple of n_head "
                f"({hp['n_head']})"
            )
        if positive_int(hp, "n_positions") < MIN_POSITIONS:
            raise ValueError(
                f"hyperparameter 'n_positions' must be at least {MIN_POSITIONS}, "
                f"got {hp['n_positions']}"
            )
        return hp

    def loop_settings(self, hp: Mapping[str, Any]) -> LoopSettings:
        return LoopSettings.from_hyperparameters({**hp, **FIXED_LOOP_SETTINGS})

    def train(self, ctx: TrainingContext) -> TrainingResult:
        import torch
        from tokenizers import Tokenizer
        from torch import nn

        from openmaas.training.recipes.causal_lm import (
            END_OF_TEXT,
            RUNTIME,
            TOKENIZER_FILE,
            GPTSize,
            LanguageModelTrainer,
            TokenStream,
            build_gpt2,
            encode_texts,
            measure_loss,
            save_causal_lm,
            token_id,
            train_tokenizer,
            wrap_tokenizer,
        )

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        settings = self.loop_settings(hp)
        size = GPTSize(
            n_layer=hp["n_layer"],
            n_head=hp["n_head"],
            n_embd=hp["n_embd"],
            n_positions=hp["n_positions"],
        )
        train, validation, test = (
            texts_of(name, examples)
            for name, examples in (
                ("train", ctx.train),
                ("validation", ctx.validation),
                ("test", ctx.test),
            )
        )
        if not train:
            raise ValueError("the training split is empty")

        # The tokenizer: learned from the training split only, so held-out perplexity is
        # honest; a resumed job reuses its checkpoint's, which its weights index.
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        tokenizer_file = ctx.work_dir / TOKENIZER_FILE
        resumed = ctx.resume_from.directory / TOKENIZER_FILE if ctx.resume_from else None
        if resumed is not None and resumed.is_file():
            tokenizer = Tokenizer.from_file(str(resumed))
        else:
            tokenizer = train_tokenizer(
                train, vocab_size=hp["vocab_size"], min_frequency=hp["min_frequency"]
            )
        tokenizer.save(str(tokenizer_file))
        end_of_text = token_id(tokenizer, END_OF_TEXT)

        def stream_of(texts: Sequence[str]) -> TokenStream:
            return TokenStream.of(encode_texts(tokenizer, texts), separator=end_of_text)

        train_stream = stream_of(train)
        n_tokens = train_stream.n_targets
        ctx.message(
            f"tokenizer: {tokenizer.get_vocab_size()} tokens; training split: {n_tokens} "
            f"tokens, in blocks of {size.n_positions}"
        )

        torch.manual_seed(ctx.seed)  # the initial weights
        network = build_gpt2(
            size,
            vocab_size=tokenizer.get_vocab_size(),
            end_of_text_id=end_of_text,
            dropout=hp["dropout"],
        )
        module: nn.Module = network  # through nn.Module: transformers annotates `to` oddly
        module.to(torch.device(ctx.device))
        n_parameters = sum(p.numel() for p in network.parameters())
        ctx.message(f"network: GPT-2, {n_parameters / 1e6:.2f} M parameters")
        outcome = LanguageModelTrainer(
            ctx,
            network,
            train_stream,
            stream_of(validation) if validation else None,
            settings,
            block_size=size.n_positions,
            pad_id=end_of_text,
            checkpoint_files=[tokenizer_file],
        ).run()

        evaluated_on, evaluated = ("test", test) if test else ("validation", validation)
        measured = None
        if evaluated:
            measured = measure_loss(
                network,
                stream_of(evaluated).blocks(size.n_positions),
                pad_id=end_of_text,
                should_stop=ctx.should_stop,
            )
            ctx.message(
                f"{evaluated_on} split: loss {measured.loss:.4f}, perplexity "
                f"{measured.perplexity:.2f} over {measured.tokens} tokens"
            )
        else:
            ctx.message("no test or validation texts: the model is registered without metrics")
        save_causal_lm(
            ctx.output_dir, network, wrap_tokenizer(tokenizer, context_length=size.n_positions)
        )
        report: dict[str, Any] = {
            "training": {
                "steps": outcome.steps,
                "epochs": outcome.epochs,
                "best_epoch": outcome.best_epoch,
                "best_validation_loss": outcome.best_value,
                "stopped_early": outcome.stopped_early,
                "trained_blocks": outcome.trained_examples,
                "training_split_tokens": n_tokens,
            },
        }
        if measured is not None:
            report.update(split=evaluated_on, tokens=measured.tokens)
        return TrainingResult(
            task=TASK,
            runtime=RUNTIME,
            metrics=measured.summary() if measured is not None else {},
            params={
                "recipe": self.name,
                "architecture": "gpt2",
                "hyperparameters": dict(hp),
                "vocab_size": tokenizer.get_vocab_size(),
                "n_parameters": n_parameters,
            },
            trained_tokens=outcome.trained_tokens,
            report=report,
        )


def texts_of(split: str, examples: Sequence[Example]) -> list[str]:
    """The texts of a split (chat files arrive rendered; see `formats.render_chat`)."""
    texts: list[str] = []
    for i, example in enumerate(examples):
        text = example.get("text")
        if not isinstance(text, str):
            raise ValueError(
                f"{split} example {i} needs a string 'text' (text-generation examples are "
                "{'text': ...}; chats arrive rendered)"
            )
        texts.append(text)
    return texts
