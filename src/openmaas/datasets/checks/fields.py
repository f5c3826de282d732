"""Checks of single fields that every record shape shares: a field that must be there, a
text that must be a non-empty string, and how a message names a value it quotes.

Example::

    text = text_field(report, line, values, "text")  # None, and a problem, if unusable
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from openmaas.datasets.report import ReportBuilder


def report_missing(
    report: ReportBuilder, line: int, values: Mapping[str, Any], column: str, code: str
) -> None:
    """A missing field, naming a close match among the row's fields (a likely typo)."""
    hint = None
    others = [str(key) for key in values if key != column]
    close = difflib.get_close_matches(column, others, n=1, cutoff=0.75)
    if close:
        hint = f"this row has {close[0]!r}: did you mean {column!r}?"
    what = "no label" if code == "missing_label" else f"no {column!r} field"
    report.add(line, code, what, column=column, hint=hint)


def text_field(
    report: ReportBuilder, line: int, values: Mapping[str, Any], column: str
) -> str | None:
    """The non-empty string in `column`, or None after reporting why there is none."""
    if column not in values:
        report_missing(report, line, values, column, "missing_column")
        return None
    text = values[column]
    if not isinstance(text, str):
        report.add(
            line,
            "invalid_value",
            f"{column!r} is {kind_of(text)}, not a string",
            column=column,
            hint="write the text as a JSON string",
        )
        return None
    if not text.strip():
        report.add(line, "empty_text", f"{column!r} is empty", column=column)
        return None
    return text


def kind_of(value: Any) -> str:
    """What a JSON value is, for a message: `'text' is a number, not a string`."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def shortened(value: Any, limit: int = 40) -> str:
    """A value as a message quotes it, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
