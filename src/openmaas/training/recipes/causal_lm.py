"""The pieces of a causal language model trained from scratch (the `gpt` recipe): a
byte-level BPE tokenizer trained on the texts, the texts packed into blocks of the context
length, next-token loss on the shared loop, and the result written as a Hugging Face GPT-2
directory the `transformers` runtime serves for `/v1/completions` and `/v1/chat/completions`.

Byte-level BPE (GPT-2's scheme) needs no unknown token: any UTF-8 text is bytes, and every
byte is in the vocabulary. The chat markers the datasets render (`formats.render_chat`) are
special tokens, so a chat tokenizes with each marker as one id, and the saved tokenizer's
`chat_template` renders a conversation exactly as the training texts were rendered.

Example::

    tokenizer = train_tokenizer(texts, vocab_size=8000, min_frequency=2)
    stream = TokenStream.of(encode_texts(tokenizer, texts), separator=0)
    trainer = LanguageModelTrainer(ctx, network, stream, None, settings, block_size=256, pad_id=0)
    outcome = trainer.run()
    save_causal_lm(ctx.output_dir, network, wrap_tokenizer(tokenizer, context_length=256))
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from openmaas.training.hyperparameters import LoopSettings
from openmaas.training.loop import ClassifierTrainer, LabeledItems
from openmaas.training.recipe import TrainingContext, TrainingStopped

# A job's event log is no place for per-file progress bars.
transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

RUNTIME = "transformers"
TOKENIZER_FILE = "tokenizer.json"  # the trained tokenizer, in work_dir and every checkpoint
END_OF_TEXT = "<|endoftext|>"  # between packed texts; also BOS, EOS and padding (GPT-2)
IM_START = "<|im_start|>"  # the ChatML markers `formats.render_chat` writes
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)  # ids 0, 1, 2
IGNORED_TARGET = -100  # cross_entropy's ignore_index: padding past a short last block
EVAL_BATCH_SIZE = 16  # blocks per forward pass when measuring the loss
# `formats.render_chat` as a Jinja template: messages apart by one newline, and a generation
# prompt that opens the assistant's turn, which the model closes with <|im_end|> (an EOS).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{% if messages %}{{ '\\n' }}{% endif %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


# -- the tokenizer ----------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, min_frequency: int) -> Tokenizer:
    """Byte-level BPE learned from `texts`, the special tokens first (ids 0, 1, 2). It may
    hold fewer than `vocab_size` entries: merges stop when no pair occurs `min_frequency`
    times."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Registered before training, so the markers inside chat texts are never split into
    # merges of their own.
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wrap_tokenizer(tokenizer: Tokenizer, *, context_length: int) -> PreTrainedTokenizerFast:
    """The tokenizer as `AutoTokenizer` loads it: GPT-2's special-token roles, the context
    length as its limit and the ChatML chat template."""
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=context_length,
        # Byte-level decoding is exact; the "clean up" would drop spaces before punctuation.
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def token_id(tokenizer: Tokenizer, token: str) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise ValueError(f"the tokenizer has no {token}")
    return int(found)


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [list(encoding.ids) for encoding in tokenizer.encode_batch(list(texts))]


# -- the data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenStream:
    """Texts as one stream of ids, each text followed by the separator (<|endoftext|>)."""

    ids: torch.Tensor  # 1-D

    @classmethod
    def of(cls, rows: Iterable[Sequence[int]], *, separator: int) -> TokenStream:
        stream: list[int] = []
        for row in rows:
            stream.extend(row)
            stream.append(separator)
        return cls(torch.tensor(stream, dtype=torch.long))

    @property
    def n_targets(self) -> int:
        return max(0, len(self.ids) - 1)

    def blocks(self, block_size: int, *, offset: int = 0) -> list[torch.Tensor]:
        """Blocks of `block_size + 1` ids that overlap by one: a block's first `block_size`
        ids are the input, its last `block_size` the targets, so every id after the first is
        predicted exactly once. The last block may be shorter.

        `offset` starts the cut that many ids in, the ids skipped moving to the end (the
        stream wraps around). Training cuts each epoch at another offset: a text then never
        sits at the same positions twice, and a small network cannot learn the texts by
        their place in a block instead of by their words."""
        ids = self.ids.roll(-offset) if offset else self.ids
        return [
            ids[start : start + block_size + 1]
            for start in range(0, max(1, len(ids) - 1), block_size)
        ]


def target_count(block: torch.Tensor) -> int:
    return max(0, len(block) - 1)


def block_batch(blocks: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of `blocks`, right-padded to the longest: padded inputs hold
    `pad_id`, padded targets are ignored (and the real inputs are where targets are)."""
    width = max(len(block) for block in blocks) - 1
    inputs = torch.full((len(blocks), width), pad_id, dtype=torch.long)
    targets = torch.full((len(blocks), width), IGNORED_TARGET, dtype=torch.long)
    for row, block in enumerate(blocks):
        inputs[row, : len(block) - 1] = block[:-1]
        targets[row, : len(block) - 1] = block[1:]
    return inputs, targets


def forward_blocks(
    network: GPT2LMHeadModel, blocks: Sequence[torch.Tensor], *, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's logits for the inputs of `blocks`, and the targets, on its device."""
    inputs, targets = block_batch(blocks, pad_id)
    device = network.device
    # The mask changes nothing a causal model's real positions see; it is given because
    # <|endoftext|> separates texts and pads alike, and transformers warns when it is not.
    mask = (targets != IGNORED_TARGET).long()
    logits: torch.Tensor = network(
        input_ids=inputs.to(device), attention_mask=mask.to(device)
    ).logits
    return logits, targets.to(device)


def next_token_loss(
    network: GPT2LMHeadModel,
    blocks: Sequence[torch.Tensor],
    *,
    pad_id: int,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of every target id given the ids before it in its block."""
    logits, targets = forward_blocks(network, blocks, pad_id=pad_id)
    return F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORED_TARGET, reduction=reduction
    )


@dataclass(frozen=True, slots=True)
class TokenLoss:
    """Mean next-token cross-entropy (nats) over `tokens` predicted ids."""

    loss: float
    tokens: int

    @property
    def perplexity(self) -> float:
        # exp past ~709 overflows a float; a perplexity that large means "untrained" anyway.
        return math.exp(min(self.loss, 700.0))

    def summary(self) -> dict[str, float]:
        return {"loss": self.loss, "perplexity": self.perplexity}


def measure_loss(
    network: GPT2LMHeadModel,
    blocks: Sequence[torch.Tensor],
    *,
    pad_id: int,
    batch_size: int = EVAL_BATCH_SIZE,
    should_stop: Callable[[], bool] = lambda: False,
) -> TokenLoss:
    """The loss over every target of `blocks` (a token-weighted mean, so a short last block
    weighs what its tokens weigh); `should_stop` is polled before each batch."""
    module: nn.Module = network  # through nn.Module: transformers leaves `eval` unannotated
    module.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            if should_stop():
                raise TrainingStopped("stopped while evaluating")
            batch = blocks[start : start + batch_size]
            total += float(next_token_loss(network, batch, pad_id=pad_id, reduction="sum"))
            tokens += sum(target_count(block) for block in batch)
    return TokenLoss(loss=total / max(1, tokens), tokens=tokens)


# -- the network and its training -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GPTSize:
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int  # the context length, in tokens


def build_gpt2(
    size: GPTSize, *, vocab_size: int, end_of_text_id: int, dropout: float
) -> GPT2LMHeadModel:
    """A GPT-2 network with fresh weights (drawn from the torch RNG: seed first); the input
    and output embeddings are tied, as in GPT-2."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=size.n_positions,
        n_embd=size.n_embd,
        n_layer=size.n_layer,
        n_head=size.n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=end_of_text_id,
        eos_token_id=end_of_text_id,
        pad_token_id=end_of_text_id,
    )
    return GPT2LMHeadModel(config)


class LanguageModelTrainer(ClassifierTrainer[int]):
    """The shared loop (schedule, clipping, checkpoints, resume, cancel, early stopping on
    validation loss) with next-token loss over blocks of the training stream instead of a
    label per item. Its items are block numbers (the loop's label slot holds 0 for each):
    epoch e cuts the stream at an offset drawn from (seed, e), so a resumed run trains on
    the blocks the first run would have.

    Example::

        trainer = LanguageModelTrainer(ctx, network, train, validation, settings, pad_id=0)
        outcome = trainer.run()  # the network now holds the lowest-validation-loss weights
    """

    network: GPT2LMHeadModel

    def __init__(
        self,
        ctx: TrainingContext,
        network: GPT2LMHeadModel,
        train: TokenStream,
        validation: TokenStream | None,
        settings: LoopSettings,
        *,
        block_size: int,
        pad_id: int,
        checkpoint_files: Sequence[Path] = (),
    ) -> None:
        if settings.early_stopping_metric != "loss":
            raise ValueError("a language model stops early on its validation loss")
        self.stream = train
        self.block_size = block_size
        self.pad_id = pad_id
        self.validation_blocks = validation.blocks(block_size) if validation is not None else []
        self._cut: tuple[int, list[torch.Tensor]] = (0, train.blocks(block_size))
        first = self._cut[1]
        super().__init__(
            ctx,
            network=network,
            forward=self.logits,
            train=LabeledItems(range(len(first)), [0] * len(first)),
            validation=LabeledItems(
                range(len(self.validation_blocks)), [0] * len(self.validation_blocks)
            ),
            labels=("next-token",),
            settings=settings,
            augment=None,
            # The same at every offset: only the last block is short, by as much each time.
            item_tokens=[target_count(block) for block in first],
            checkpoint_files=checkpoint_files,
        )

    def epoch_blocks(self, epoch: int) -> list[torch.Tensor]:
        if self._cut[0] != epoch:
            rng = random.Random(f"{self.ctx.seed}:{epoch}:offset")  # noqa: S311 - not secret
            offset = rng.randrange(self.block_size) if epoch else 0
            self._cut = (epoch, self.stream.blocks(self.block_size, offset=offset))
        return self._cut[1]

    def items_blocks(self, items: Sequence[int]) -> list[torch.Tensor]:
        blocks = self.epoch_blocks(self.progress.epoch)
        return [blocks[i] for i in items]

    def logits(self, items: Sequence[int]) -> torch.Tensor:
        return forward_blocks(self.network, self.items_blocks(items), pad_id=self.pad_id)[0]

    def batch_loss(self, items: Sequence[int], batch: Sequence[int]) -> torch.Tensor:
        return next_token_loss(self.network, self.items_blocks(items), pad_id=self.pad_id)

    def validate(self) -> dict[str, float]:
        measured = measure_loss(
            self.network,
            self.validation_blocks,
            pad_id=self.pad_id,
            should_stop=self.ctx.should_stop,
        )
        return measured.summary()


# -- the servable directory -------------------------------------------------------------------


def save_causal_lm(
    directory: Path, network: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    """A Hugging Face directory: safetensors weights, config, a generation config that stops
    at <|endoftext|> or <|im_end|>, and the tokenizer with the chat template in
    `tokenizer_config.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    end_ids = [tokenizer.convert_tokens_to_ids(token) for token in (END_OF_TEXT, IM_END)]
    network.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=end_ids[0], eos_token_id=end_ids, pad_token_id=end_ids[0]
    )
    module: nn.Module = network  # through nn.Module: transformers leaves these unannotated
    module.cpu()
    module.eval()
    network.save_pretrained(directory)
    # In tokenizer_config.json rather than chat_template.jinja: what older readers expect.
    tokenizer.save_pretrained(directory, save_jinja_files=False)
