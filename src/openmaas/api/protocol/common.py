"""Shapes shared by every inference route."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


def usage(prompt_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens)


def check_texts(texts: Sequence[str]) -> None:
    """Refuse empty batches and empty strings, naming the offending item."""
    if not texts:
        raise ValueError("input is empty; send at least one string")
    for index, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"input[{index}] is empty; every input needs some text")


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
