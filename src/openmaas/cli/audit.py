"""`openmaas audit`: who changed what, when, and from where (needs an admin key).

openmaas audit --since 24h
openmaas audit --target models/sentiment --json
"""

from __future__ import annotations

from typing import Annotated

import typer

from openmaas.cli.common import (
    JsonFlag,
    client_from,
    compact,
    err,
    out,
    plain,
    print_json,
    table,
    when,
)
from openmaas.cli.usage import ProjectOption, SinceOption, UntilOption, parse_time
from openmaas.protocol.metering import AuditEventOut


def show_audit(
    ctx: typer.Context,
    since: SinceOption = None,
    until: UntilOption = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this actor (om-<prefix>).", show_default=False)
    ] = None,
    project: ProjectOption = None,
    action: Annotated[
        str | None,
        typer.Option(help="Only this action, e.g. alias.set, key.revoke.", show_default=False),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Only this target and what is under it, e.g. models/sentiment.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Events per page.")] = 100,
    after_id: Annotated[
        int | None,
        typer.Option("--after-id", min=0, help="Start after this event id.", show_default=False),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Follow every page instead of stopping after one.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show audit events, oldest first: every change to models, versions, aliases, keys and
    projects, with the state before and after it."""
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    events: list[AuditEventOut] = []
    cursor = after_id
    with client_from(ctx) as client:
        while True:
            page = client.audit(
                start=start,
                end=end,
                actor=actor,
                project=project,
                action=action,
                target=target,
                limit=limit,
                after_id=cursor,
            )
            events += page.data
            cursor = page.next_after_id
            if cursor is None or not every:
                break
    if as_json:
        print_json(events)
    elif not events:
        out.print(plain("No audit events match."))
    else:
        grid = table("ID", "WHEN", "ACTOR", "ACTION", "TARGET", "BEFORE", "AFTER", "CLIENT")
        for event in events:
            grid.add_row(
                plain(event.id),
                when(event.created_at),
                plain(event.actor),
                plain(event.action),
                plain(event.target),
                plain(compact(event.before)),
                plain(compact(event.after)),
                plain(event.client_address or "-"),
            )
        out.print(grid)
    if cursor is not None:
        # stderr, so stdout stays one JSON document or one table.
        err.print(plain(f"more events follow: add --after-id {cursor} (or --all)"))
