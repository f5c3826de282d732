"""A word-level vocabulary trained on the training texts, and padded batches of token ids.

The tokenizer is a `tokenizers.Tokenizer` (saved as `tokenizer.json`, loadable without
OpenMaaS): NFKC, lowercase, split on whitespace and then on every punctuation character, one
id per word. Id 0 is padding and id 1 stands for words outside the vocabulary.

Example::

    tokenizer = build_vocabulary(texts, max_size=20_000, min_frequency=2)
    ids, lengths = pad_batch(token_ids(tokenizer, ["A fine film."], max_length=64), min_length=5)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD_TOKEN = "[PAD]"  # noqa: S105 - a vocabulary entry, not a secret
UNKNOWN_TOKEN = "[UNK]"  # noqa: S105 - a vocabulary entry, not a secret
PAD_ID = 0
UNKNOWN_ID = 1


def build_vocabulary(texts: Iterable[str], *, max_size: int, min_frequency: int) -> Tokenizer:
    """The `max_size` most frequent words (specials included) seen at least `min_frequency`
    times."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNKNOWN_TOKEN))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    trainer = trainers.WordLevelTrainer(
        vocab_size=max_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, UNKNOWN_TOKEN],
        show_progress=False,
    )
    # The trainer gives the special tokens the first ids, in order: PAD_ID and UNKNOWN_ID.
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def token_ids(tokenizer: Tokenizer, texts: Sequence[str], *, max_length: int) -> list[list[int]]:
    """Ids per text, cut at `max_length`; an empty text becomes one unknown word, so every
    row has a length of at least one.

    Truncation is done here rather than with `enable_truncation`: that setting is state inside
    the Rust object, and the server counts tokens on one thread while a batch runs on another.
    """
    if not texts:
        return []
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [encoding.ids[:max_length] or [UNKNOWN_ID] for encoding in encodings]


def pad_batch(
    rows: Sequence[Sequence[int]], *, min_length: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, lengths): ids right-padded with `PAD_ID` to the longest row (at least
    `min_length` columns, for convolutions wider than a short text)."""
    width = max([min_length, *(len(row) for row in rows)])
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    return ids, lengths


def vocabulary_size(tokenizer: Tokenizer) -> int:
    return int(tokenizer.get_vocab_size(with_added_tokens=True))
