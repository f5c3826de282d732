"""Shapes shared across resource areas: request and response bases, lists, inference usage.

Example::

    class ThingOut(Response):
        name: str

    ListOut[ThingOut](data=[ThingOut(name="a")]).model_dump()  # {"object": "list", "data": [...]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

T = TypeVar("T")

# Ids and version numbers are signed 64-bit integers in SQLite and PostgreSQL: a larger number
# names no row, and SQLite's driver raises OverflowError on it instead of finding nothing.
MAX_ROW_ID = 2**63 - 1
_ASCII_DIGITS = frozenset("0123456789")


def parse_decimal(text: str, maximum: int = MAX_ROW_ID) -> int | None:
    """`text` as a number of ASCII digits up to `maximum`, or None.

    `str.isdigit()` also accepts digits such as `²` that `int()` refuses (and `int()` accepts
    other scripts' digits, spaces, signs and underscores), so wire numbers are parsed here.

    Example::

        parse_decimal("12")  # 12
        parse_decimal("²")  # None
    """
    if not text or len(text) > len(str(maximum)) or not _ASCII_DIGITS.issuperset(text):
        return None
    value = int(text)
    return value if value <= maximum else None


class Schema(BaseModel):
    """A request body of our own API: unknown fields are a mistake worth a 400."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    # Responses ignore unknown fields so an older SDK keeps working against a newer server.
    model_config = ConfigDict(extra="ignore")


class OmitsNone(Response):
    """A response whose `omitted_when_none` fields are left out rather than sent as null:
    where OpenAI's schema has a field present with a value or absent, never null
    (a file's `status_details`, an event's `data`).

    Example::

        class FileOut(OmitsNone):
            omitted_when_none = frozenset({"status_details"})
            status_details: str | None = None
    """

    omitted_when_none: ClassVar[frozenset[str]] = frozenset()

    # Unannotated on purpose: with a return annotation pydantic would document the response
    # as any object instead of the model's own fields.
    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data = handler(self)
        for name in self.omitted_when_none:
            if name in data and data[name] is None:
                del data[name]
        return data


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
