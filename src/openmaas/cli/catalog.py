"""`openmaas catalog list`: the built-in models this server can offer."""

from __future__ import annotations

import typer

from openmaas.cli.common import JsonFlag, client_from, out, plain, print_json, table

app = typer.Typer(help="The built-in model catalog.", no_args_is_help=True)


@app.command("list")
def list_catalog(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List catalog models, whether this server can offer them, and why not."""
    with client_from(ctx) as client:
        entries = client.catalog()
    if as_json:
        print_json(entries)
        return
    if not entries:
        out.print(plain("The catalog is empty."))
        return
    grid = table("NAME", "TASK", "RUNTIME", "AVAILABLE", "REGISTERED", "LICENSE", "DESCRIPTION")
    for entry in entries:
        available = "yes" if entry.available else f"no: {entry.unavailable_reason or '?'}"
        grid.add_row(
            plain(entry.name),
            plain(entry.task),
            plain(entry.runtime),
            plain(available),
            plain("yes" if entry.registered else "-"),
            plain(entry.license or "-"),
            plain(entry.description),
        )
    out.print(grid)
