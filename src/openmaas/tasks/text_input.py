"""What every text task shares: the model surface that counts tokens, the token limit, and
the text normalisation behind cache keys."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from openmaas.errors import InputTooLarge, InputTooLong


@runtime_checkable
class TokenCounter(Protocol):
    """The part of every loaded model the task contracts use."""

    tasks: frozenset[str]  # the task names the model serves
    max_input_tokens: int | None

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


# Tokens a tokenizer may add to one text besides those of its characters: [CLS]/[SEP], a
# pair's separator, BOS/EOS, SentencePiece's leading word marker.
ITEM_OVERHEAD_TOKENS = 4


def text_token_bound(text: str) -> int:
    """At most how many tokens a tokenizer makes of `text`, without tokenizing it.

    Each token of a byte-level BPE, WordPiece, SentencePiece (byte fallback included) or
    spaCy tokenizer covers at least one UTF-8 byte of the text, so the byte count bounds
    them. ASCII text costs nothing to measure (its length); other text is encoded once.
    Not a bound: a tokenizer that expands the text first (NFKC turns U+FDFA into 18
    characters); settling charges what such a request used beyond its bound.
    """
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return size + ITEM_OVERHEAD_TOKENS


def token_bound(items: object) -> int:
    """`text_token_bound` summed over a text, a token id list, or a sequence of either
    (the inputs of the text tasks); 0 for anything else (audio bytes are not tokens)."""
    if isinstance(items, str):
        return text_token_bound(items)
    if isinstance(items, Sequence) and not isinstance(items, bytes | bytearray):
        total = 0
        for item in items:
            if isinstance(item, str):
                total += text_token_bound(item)
            elif isinstance(item, Sequence) and not isinstance(item, bytes | bytearray):
                total += len(item) + ITEM_OVERHEAD_TOKENS  # token ids: counted as given
        return total
    return 0


def normalize_text(text: str) -> str:
    """Inputs that give the same result share an entry: Unicode NFC, outer whitespace off.
    Only for tasks whose output does not point into the text (not NER offsets)."""
    return unicodedata.normalize("NFC", text).strip()


def keep_text(text: str) -> str:
    """Cache key text for results that point into the input (offsets): exact repeats only."""
    return text


def limit_tokens(tokens: list[int], limit: int | None, truncate: bool, label: str) -> list[int]:
    """Tokens per text within the model's limit, or InputTooLong when not truncating."""
    if limit is None:
        return tokens
    too_long = next((i for i, t in enumerate(tokens) if t > limit), None)
    if too_long is not None and not truncate:
        raise InputTooLong(
            f"input[{too_long}] has {tokens[too_long]} tokens; model "
            f"'{label}' accepts at most {limit}. Shorten it, or send "
            '"truncate": true to cut it at the limit',
            param="input",
        )
    return [min(t, limit) for t in tokens]


def refuse_large_texts(
    texts: Sequence[str], limit: int, label: str, *, setting: str | None = None
) -> None:
    """InputTooLarge for the first text longer than `limit` characters (truncating or not:
    the limit bounds the work before any truncation, tokenizing included). `setting` names
    the server setting the limit comes from, when it does."""
    too_long = next((i for i, text in enumerate(texts) if len(text) > limit), None)
    if too_long is not None:
        source = f" ({setting})" if setting else ""
        raise InputTooLarge(
            f"input[{too_long}] has {len(texts[too_long]):,} characters; model '{label}' "
            f"accepts at most {limit:,}{source}. Split it into smaller texts",
            param="input",
        )


def refuse_many_sentences(counts: Sequence[int], limit: int, label: str) -> None:
    """InputTooLarge for the first text with more than `limit` sentences."""
    too_many = next((i for i, count in enumerate(counts) if count > limit), None)
    if too_many is not None:
        raise InputTooLarge(
            f"input[{too_many}] has {counts[too_many]:,} sentences; model '{label}' takes "
            f"at most {limit:,} (its work grows with the square of the sentences; "
            "OPENMAAS_MAX_INPUT_SENTENCES). Split it into smaller texts",
            param="input",
        )
