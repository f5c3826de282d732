"""Wire numbers are ASCII digits within the store's range (issue 13: `isdigit()` let `²`
reach `int()`, and ids past 64 bits reached SQLite)."""

from __future__ import annotations

import pytest

from openmaas.protocol.common import MAX_ROW_ID, parse_decimal


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("7", 7), ("0012", 12), (str(MAX_ROW_ID), MAX_ROW_ID)]
)
def test_ascii_digits_parse(text: str, value: int) -> None:
    assert parse_decimal(text) == value


@pytest.mark.parametrize(
    "text",
    [
        *("", "²", "٣", "\uff11"),  # empty; superscript, Arabic-Indic and fullwidth digits
        *("1_000", " 1", "1 ", "+1", "-1", "1e3"),  # what int() or float() would accept
        *(str(MAX_ROW_ID + 1), "9" * 400),
    ],
)
def test_anything_else_is_none(text: str) -> None:
    assert parse_decimal(text) is None


def test_the_maximum_is_the_callers() -> None:
    assert parse_decimal("10", maximum=10) == 10
    assert parse_decimal("11", maximum=10) is None
