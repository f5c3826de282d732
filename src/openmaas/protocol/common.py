"""Shapes shared across resource areas: request and response bases, lists, inference usage.

Example::

    class ThingOut(Response):
        name: str

    ListOut[ThingOut](data=[ThingOut(name="a")]).model_dump()  # {"object": "list", "data": [...]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Schema(BaseModel):
    """A request body of our own API: unknown fields are a mistake worth a 400."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    # Responses ignore unknown fields so an older SDK keeps working against a newer server.
    model_config = ConfigDict(extra="ignore")


class ListOut(Response, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]


# -- inference routes -----------------------------------------------------------------------


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
