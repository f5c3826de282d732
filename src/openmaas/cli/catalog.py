"""`openmaas catalog list|register`: the built-in models this server can offer.

openmaas catalog list
openmaas catalog register apertium-eng-spa   # its package was installed after the first start
"""

from __future__ import annotations

from typing import Annotated

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


@app.command("register")
def register_entry(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Catalog entry name.", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Register a catalog model now (an admin key): one whose package was installed after the
    server's first start, such as Apertium's. No restart needed."""
    with client_from(ctx) as client:
        version = client.register_catalog_entry(name)
    if as_json:
        print_json(version)
        return
    out.print(plain(f"registered {version.reference} ({version.task}, {version.runtime})"))
