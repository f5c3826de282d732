"""What every CLI command shares: the SDK client, output helpers, option parsing.

People get rich tables on stdout; `--json` gives scripts JSON on stdout and nothing else.
Progress and errors go to stderr, so stdout stays parseable either way.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TextIO

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from openmaas.client import DEFAULT_URL, Client

PIPE_WIDTH = 160


def _width(stream: TextIO) -> int | None:
    # Rich assumes 80 columns when output is piped and folds tables into tall narrow cells;
    # a log file or `less` handles long lines better. COLUMNS still wins when set.
    if "COLUMNS" in os.environ or stream.isatty():
        return None
    return PIPE_WIDTH


# Rich consoles look up sys.stdout/sys.stderr at write time, so redirection keeps working.
out = Console(highlight=False, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, width=_width(sys.stderr))

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of a table.")
]


class CLIError(Exception):
    """A problem found by the CLI itself (bad option combination, missing file...)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Connection:
    """The global `--url`/`--api-key` options, kept on the click context."""

    url: str
    api_key: str | None

    def client(self) -> Client:
        return Client(self.url, api_key=self.api_key)


def client_from(ctx: typer.Context) -> Client:
    connection = ctx.find_object(Connection)
    if connection is None:  # a group invoked without the root callback (tests)
        connection = Connection(DEFAULT_URL, None)
    return connection.client()


# -- output ----------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    """JSON on stdout, bypassing rich so nothing is wrapped, highlighted or cut."""
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def to_jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, dict):
        return {key: to_jsonable(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [to_jsonable(item) for item in data]
    return data


def table(*columns: str, title: str | None = None) -> Table:
    grid = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        show_edge=False,
        # A title never wraps: a narrow table grows to fit it instead.
        min_width=len(title) if title else None,
    )
    for column in columns:
        grid.add_column(column, overflow="fold")
    return grid


def plain(value: object) -> Text:
    # Text, not markup: names and descriptions may contain "[...]" that rich would parse.
    return Text("" if value is None else str(value))


def human_size(size: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value = float(size)
    for unit in units:
        if value < 1024 or unit == units[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def aliases_text(aliases: dict[str, int]) -> str:
    return ", ".join(f"{alias}→{version}" for alias, version in sorted(aliases.items()))


def compact(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"


# -- option parsing --------------------------------------------------------------------------


def parse_pairs(values: Iterable[str], option: str) -> dict[str, str]:
    """`["k=v", ...]` as a dict; the first `=` splits, so values may contain `=`."""
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{option} expects KEY=VALUE, got {item!r}", exit_code=2)
        pairs[key.strip()] = value
    return pairs


def parse_metrics(values: Iterable[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in parse_pairs(values, "--metric").items():
        try:
            number_value = float(value)
        except ValueError:
            raise CLIError(f"--metric {key}: {value!r} is not a number", exit_code=2) from None
        if not math.isfinite(number_value):
            raise CLIError(f"--metric {key}: {value!r} is not a finite number", exit_code=2)
        metrics[key] = number_value
    return metrics


def parse_params(values: Iterable[str]) -> dict[str, Any]:
    """Values are read as JSON when they parse (`lr=0.1`, `layers=[1,2]`), else as text."""
    params: dict[str, Any] = {}
    for key, value in parse_pairs(values, "--param").items():
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


TagOption = Annotated[
    list[str] | None, typer.Option("--tag", help="KEY=VALUE tag to set; repeatable.")
]
UntagOption = Annotated[
    list[str] | None, typer.Option("--untag", help="Tag KEY to remove; repeatable.")
]


def tag_changes(
    description: str | None, tag: list[str] | None, untag: list[str] | None
) -> dict[str, str | None]:
    """The tag patch of an `edit` command (a None value removes the tag); refuses a no-op."""
    tags: dict[str, str | None] = dict(parse_pairs(tag or [], "--tag"))
    tags.update(dict.fromkeys(untag or []))
    if description is None and not tags:
        raise CLIError("nothing to change: give --description, --tag or --untag", exit_code=2)
    return tags


# The model-name argument every command group takes first.
NameArg = Annotated[str, typer.Argument(help="Model name.", show_default=False)]
