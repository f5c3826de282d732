"""`openmaas alias ...`: point aliases at versions, inspect their history, roll back."""

from __future__ import annotations

from typing import Annotated

import typer

from openmaas.cli.common import (
    JsonFlag,
    NameArg,
    client_from,
    out,
    plain,
    print_json,
    table,
    when,
)
from openmaas.protocol.registry import AliasMoveOut

app = typer.Typer(
    help="Aliases (production, staging...): list, set, delete, history, rollback.",
    no_args_is_help=True,
)

AliasArg = Annotated[str, typer.Argument(help="Alias, e.g. production.", show_default=False)]
ReasonOption = Annotated[str, typer.Option(help="Why; recorded in the alias history.")]


def _report(move: AliasMoveOut, as_json: bool) -> None:
    if as_json:
        print_json(move)
        return
    event = move.event
    if event is None:
        out.print(plain(f"{move.model}@{move.alias} already points at {move.version}; unchanged"))
        return
    before = "-" if event.from_version is None else str(event.from_version)
    after = "-" if event.to_version is None else str(event.to_version)
    out.print(plain(f"{move.model}@{move.alias}: {before} → {after} ({event.action})"))


@app.command("list")
def list_aliases(ctx: typer.Context, name: NameArg, as_json: JsonFlag = False) -> None:
    """List NAME's aliases and the versions they point at."""
    with client_from(ctx) as client:
        aliases = client.aliases(name)
    if as_json:
        print_json(aliases)
        return
    if not aliases:
        out.print(plain(f"{name} has no aliases."))
        return
    grid = table("ALIAS", "VERSION")
    for alias, version in sorted(aliases.items()):
        grid.add_row(plain(alias), plain(version))
    out.print(grid)


@app.command("set")
def set_alias(
    ctx: typer.Context,
    name: NameArg,
    alias: AliasArg,
    version: Annotated[int, typer.Argument(help="Target version.", min=1, show_default=False)],
    reason: ReasonOption = "",
    as_json: JsonFlag = False,
) -> None:
    """Point ALIAS of NAME at VERSION (creates or moves it)."""
    with client_from(ctx) as client:
        _report(client.set_alias(name, alias, version, reason=reason), as_json)


@app.command("delete")
def delete_alias(
    ctx: typer.Context,
    name: NameArg,
    alias: AliasArg,
    reason: ReasonOption = "",
    as_json: JsonFlag = False,
) -> None:
    """Remove ALIAS from NAME (its history is kept)."""
    with client_from(ctx) as client:
        _report(client.delete_alias(name, alias, reason=reason), as_json)


@app.command("rollback")
def rollback_alias(
    ctx: typer.Context,
    name: NameArg,
    alias: AliasArg,
    reason: Annotated[
        str, typer.Option(help="Why you roll back; required, recorded in the alias history.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Move ALIAS back to its previous target (repeat to go further back)."""
    with client_from(ctx) as client:
        _report(client.rollback(name, alias, reason=reason), as_json)


@app.command("history")
def alias_history(
    ctx: typer.Context,
    name: NameArg,
    alias: Annotated[
        str | None, typer.Argument(help="Only this alias; all when omitted.", show_default=False)
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show every move of NAME's aliases, oldest first."""
    with client_from(ctx) as client:
        events = client.alias_history(name, alias)
    if as_json:
        print_json(events)
        return
    if not events:
        out.print(plain("No alias changes recorded."))
        return
    grid = table("WHEN", "ALIAS", "ACTION", "FROM", "TO", "ACTOR", "REASON")
    for event in events:
        grid.add_row(
            when(event.created_at),
            plain(event.alias),
            plain(event.action),
            plain("-" if event.from_version is None else event.from_version),
            plain("-" if event.to_version is None else event.to_version),
            plain(event.actor or "-"),
            plain(event.reason or "-"),
        )
    out.print(grid)
