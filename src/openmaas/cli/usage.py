"""`openmaas usage`: metered usage as a table, JSON, or the billing CSV.

openmaas usage --since 7d --group-by day,model
openmaas usage --since 2024-05-01 --until 2024-06-01 --csv > may.csv
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.text import Text

from openmaas.cli.common import (
    CLIError,
    JsonFlag,
    client_from,
    number,
    out,
    plain,
    print_json,
    table,
)
from openmaas.protocol.metering import UsageGroupOut

_AGE_RE = re.compile(r"([0-9]+)([mhdw])")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
TIME_HELP = (
    "ISO 8601 (2024-05-01, 2024-05-01T12:00:00Z; no zone means UTC) or an age: 30m, 12h, 7d, 2w."
)

SinceOption = Annotated[
    str | None, typer.Option(help=f"Start (inclusive). {TIME_HELP}", show_default=False)
]
UntilOption = Annotated[
    str | None, typer.Option(help=f"End (exclusive); default now. {TIME_HELP}", show_default=False)
]
ProjectOption = Annotated[str | None, typer.Option(help="Only this project.", show_default=False)]


def parse_time(value: str | None, option: str) -> str | None:
    """An age like `7d` as the UTC time that long ago; anything else goes to the server as
    written (it names what is wrong with a bad timestamp)."""
    if value is None:
        return None
    match = _AGE_RE.fullmatch(value.strip())
    if match is None:
        if not value.strip():
            raise CLIError(f"{option} is empty; {TIME_HELP}", exit_code=2)
        return value.strip()
    amount, unit = int(match.group(1)), _AGE_UNITS[match.group(2)]
    return (datetime.now(UTC) - timedelta(**{unit: amount})).isoformat()


def _group_by(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def show_usage(
    ctx: typer.Context,
    since: SinceOption = None,
    until: UntilOption = None,
    project: ProjectOption = None,
    key_id: Annotated[
        int | None, typer.Option("--key-id", help="Only this key (by id).", show_default=False)
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="Only this key (by its 8-character prefix).", show_default=False
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.", show_default=False)] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="Comma-separated: day, project, key, model, route. Default day,model "
            "(with --csv: day,project,key,model).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print the billing CSV (with costs) on stdout.")
    ] = False,
) -> None:
    """Show metered usage: requests, errors, tokens, items, audio and latency per group.

    Defaults to the last 30 days. Keys without the admin scope see their own project only.
    """
    if as_json and as_csv:
        raise CLIError("--json and --csv exclude each other", exit_code=2)
    if key is not None:
        key = key.removeprefix("om-").split("_", 1)[0]  # a whole key pasted by mistake
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    groups = _group_by(group_by)
    with client_from(ctx) as client:
        if as_csv:
            csv_text = client.usage_csv(
                start=start,
                end=end,
                project=project,
                key_id=key_id,
                key_prefix=key,
                model=model,
                group_by=groups,
            )
            sys.stdout.write(csv_text)
            sys.stdout.flush()
            return
        report = client.usage(
            start=start,
            end=end,
            project=project,
            key_id=key_id,
            key_prefix=key,
            model=model,
            group_by=groups,
        )
    if as_json:
        print_json(report)
        return
    dimensions = [_DIMENSIONS[name] for name in report.group_by]
    title = f"Usage {report.start:%Y-%m-%d %H:%M} → {report.end:%Y-%m-%d %H:%M} UTC"
    headers = [header for header, _ in dimensions]
    grid = table(*headers, *_MEASURES, title=title)
    for group in report.data:
        grid.add_row(*[plain(cell(group)) for _, cell in dimensions], *_measures(group))
    blanks = [plain("") for _ in headers]
    if blanks:
        blanks[0] = plain("TOTAL")
    grid.add_row(*blanks, *_measures(report.total), style="bold", end_section=True)
    out.print(grid)


def _key(group: UsageGroupOut) -> str:
    return f"om-{group.key_prefix}" if group.key_prefix else "-"  # "-": no key (open routes)


_DIMENSIONS: dict[str, tuple[str, Callable[[UsageGroupOut], object]]] = {
    "day": ("DAY", lambda group: group.day),
    "project": ("PROJECT", lambda group: group.project),
    "key": ("KEY", _key),
    "model": ("MODEL", lambda group: group.model or "-"),
    "route": ("ROUTE", lambda group: group.route),
}
_MEASURES = ("REQUESTS", "ERRORS", "IN TOKENS", "OUT TOKENS", "ITEMS", "AUDIO S", "MEAN MS")


def _measures(group: UsageGroupOut) -> list[Text]:
    return [
        plain(group.requests),
        plain(group.errors),
        plain(group.input_tokens),
        plain(group.output_tokens),
        plain(group.items),
        plain(number(group.audio_seconds)),
        plain(f"{group.latency_ms_mean:.1f}"),  # in tenths: finer is noise
    ]
