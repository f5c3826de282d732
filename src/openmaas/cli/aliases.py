"""`openmaas alias ...`: point aliases at versions, inspect their history, roll back."""

from __future__ import annotations

from typing import Annotated

import typer

from openmaas.cli.common import (
    CLIError,
    JsonFlag,
    NameArg,
    client_from,
    out,
    parse_pairs,
    plain,
    print_json,
    table,
    when,
)
from openmaas.protocol.registry import AliasMoveOut
from openmaas.protocol.rollout import TrafficOut

app = typer.Typer(
    help="Aliases (production, staging...): list, set, delete, history, rollback, traffic.",
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
    gate = event.gate
    if gate and gate.get("forced"):
        out.print(plain("evaluation gate: forced"))
    elif gate:
        metric, current, candidate = gate["metric"], gate["current"], gate["candidate"]
        out.print(
            plain(
                f"evaluation gate passed: {metric} {candidate['score']:.4f} (version "
                f"{candidate['version']}) against {current['score']:.4f} (version "
                f"{current['version']}) on {gate['examples']} examples"
            )
        )


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
    force: Annotated[
        bool, typer.Option(help="Move past the alias's evaluation gate (admin; give a reason).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Point ALIAS of NAME at VERSION (creates or moves it; a gated alias scores it first)."""
    with client_from(ctx) as client:
        _report(client.set_alias(name, alias, version, reason=reason, force=force), as_json)


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


@app.command("traffic")
def set_traffic(
    ctx: typer.Context,
    name: NameArg,
    alias: AliasArg,
    weights: Annotated[
        list[str],
        typer.Argument(help="VERSION=WEIGHT for each version, e.g. 1=90 2=10.", show_default=False),
    ],
    sticky: Annotated[
        str | None, typer.Option(help="Header that keeps a user on one version (x-user-id).")
    ] = None,
    shadow: Annotated[
        int | None, typer.Option(help="Version that gets a mirror of the requests.", min=1)
    ] = None,
    shadow_share: Annotated[float, typer.Option(help="Share of requests mirrored.")] = 1.0,
    max_error_rate_delta: Annotated[
        float | None,
        typer.Option(
            help="Roll back when a candidate's error rate is this much above the baseline's."
        ),
    ] = None,
    max_p99_ratio: Annotated[
        float | None,
        typer.Option(help="Roll back when a candidate's p99 is this many times the baseline's."),
    ] = None,
    min_requests: Annotated[
        int, typer.Option(help="Requests a candidate answers before it is judged.", min=1)
    ] = 200,
    reason: ReasonOption = "",
    as_json: JsonFlag = False,
) -> None:
    """Split ALIAS's requests over versions by weight (the alias's own version included)."""
    try:
        versions: dict[int | str, int] = {
            int(v): int(w) for v, w in parse_pairs(weights, "VERSION=WEIGHT").items()
        }
    except ValueError:
        raise CLIError("weights are VERSION=WEIGHT with whole numbers, e.g. 1=90 2=10") from None
    rollback = None
    if max_error_rate_delta is not None or max_p99_ratio is not None:
        rollback = {
            "max_error_rate_delta": max_error_rate_delta,
            "max_p99_ratio": max_p99_ratio,
            "min_requests": min_requests,
        }
    with client_from(ctx) as client:
        split = client.set_traffic(
            name,
            alias,
            versions,
            sticky=sticky,
            shadow=shadow,
            shadow_share=shadow_share,
            rollback=rollback,
            reason=reason,
        )
    _report_traffic(split, as_json)


@app.command("traffic-show")
def show_traffic(
    ctx: typer.Context,
    name: NameArg,
    alias: Annotated[
        str | None,
        typer.Argument(
            help="Only this alias's split; every split when omitted.", show_default=False
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """ALIAS's split (or every split of NAME) and what each version did (on the server that
    answers)."""
    with client_from(ctx) as client:
        if alias is not None:
            _report_traffic(client.traffic(name, alias), as_json)
            return
        splits = client.traffic_splits(name)
    if as_json:
        print_json(splits)
        return
    if not splits:
        out.print(plain(f"{name}: no alias has a traffic split"))
    for split in splits:
        _report_traffic(split, as_json)


@app.command("traffic-end")
def end_traffic(
    ctx: typer.Context,
    name: NameArg,
    alias: AliasArg,
    reason: ReasonOption = "",
    as_json: JsonFlag = False,
) -> None:
    """End ALIAS's split: its own version answers every request again."""
    with client_from(ctx) as client:
        split = client.end_traffic(name, alias, reason=reason)
    if as_json:
        print_json(split)
        return
    out.print(plain(f"{split.model}@{split.alias}: split ended; version {split.baseline} answers"))


def _report_traffic(split: TrafficOut, as_json: bool) -> None:
    if as_json:
        print_json(split)
        return
    options = []
    if split.sticky:
        options.append(f"sticky by {split.sticky}")
    if split.shadow:
        options.append(f"shadow {split.shadow} ({split.shadow_share:.0%})")
    if split.rollback:
        options.append("automatic rollback")
    suffix = f" ({', '.join(options)})" if options else ""
    out.print(plain(f"{split.model}@{split.alias}: baseline {split.baseline}{suffix}"))
    total = sum(split.versions.values()) or 1
    grid = table("VERSION", "SHARE", "REQUESTS", "ERRORS", "P50 MS", "P99 MS", "SHADOW AGREEMENT")
    for version in sorted({*split.versions, *split.stats}, key=int):
        stats = split.stats.get(version)
        share = split.versions.get(version)
        grid.add_row(
            plain(version),
            plain("shadow" if share is None else f"{share / total:.0%}"),
            plain(stats.requests if stats else 0),
            plain(stats.errors if stats else 0),
            plain(_ms(stats.p50_ms if stats else None)),
            plain(_ms(stats.p99_ms if stats else None)),
            plain(_ms(stats.shadow_agreement if stats else None, 3)),
        )
    out.print(grid)


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@app.command("policy")
def set_policy(
    ctx: typer.Context,
    name: NameArg,
    alias: AliasArg,
    eval_file: Annotated[str, typer.Option(help="Labelled file id the versions are scored on.")],
    metric: Annotated[str, typer.Option(help="accuracy, macro_f1, entity_f1, ...")] = "macro_f1",
    min_delta: Annotated[
        float, typer.Option(help="The candidate must score at least current + this.")
    ] = 0.0,
    reason: ReasonOption = "",
    as_json: JsonFlag = False,
) -> None:
    """Gate every later move of ALIAS on an evaluation against its current version."""
    with client_from(ctx) as client:
        policy = client.set_policy(
            name, alias, eval_file, metric=metric, min_delta=min_delta, reason=reason
        )
    if as_json:
        print_json(policy)
        return
    out.print(
        plain(
            f"{policy.model}@{policy.alias}: moves need {policy.metric} on {policy.eval_file} "
            f"at least the current version's + {policy.min_delta:g}"
        )
    )


@app.command("policy-delete")
def delete_policy(
    ctx: typer.Context, name: NameArg, alias: AliasArg, reason: ReasonOption = ""
) -> None:
    """Remove ALIAS's evaluation gate."""
    with client_from(ctx) as client:
        policy = client.delete_policy(name, alias, reason=reason)
    out.print(plain(f"{policy.model}@{policy.alias}: evaluation gate removed"))
