"""`openmaas versions ...`: inspect, compare, verify, edit and delete model versions."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from openmaas.cli.common import (
    CLIError,
    JsonFlag,
    NameArg,
    TagOption,
    UntagOption,
    client_from,
    compact,
    human_size,
    number,
    out,
    plain,
    print_json,
    table,
    tag_changes,
    when,
)
from openmaas.cli.models import versions_table
from openmaas.client import Client
from openmaas.protocol.registry import CompareOut, VersionOut

app = typer.Typer(
    help="Model versions: list, show, compare, verify, edit, delete.", no_args_is_help=True
)

VersionArg = Annotated[int, typer.Argument(help="Version number.", min=1, show_default=False)]
RefArg = Annotated[
    str,
    typer.Argument(
        help="Model name, or a reference: NAME@ALIAS or NAME:VERSION.", show_default=False
    ),
]
OptionalVersionArg = Annotated[
    int | None,
    typer.Argument(
        help="Version number; when omitted, REF decides (a bare name means its production "
        "alias, else the newest version).",
        min=1,
        show_default=False,
    ),
]


def pick_version(client: Client, ref: str, version: int | None) -> VersionOut:
    if version is None:
        return client.resolve(ref)
    if "@" in ref or ":" in ref:
        raise CLIError(f"give either the reference {ref!r} or NAME VERSION, not both", exit_code=2)
    return client.get_version(ref, version)


@app.command("list")
def list_versions(ctx: typer.Context, name: NameArg, as_json: JsonFlag = False) -> None:
    """List the versions of a model, oldest first."""
    with client_from(ctx) as client:
        versions = client.list_versions(name)
    if as_json:
        print_json(versions)
        return
    if not versions:
        out.print(plain(f"{name} has no versions."))
        return
    out.print(versions_table(versions))


@app.command("show")
def show_version(
    ctx: typer.Context, ref: RefArg, version: OptionalVersionArg = None, as_json: JsonFlag = False
) -> None:
    """Show one version: metadata, metrics, params, lineage and files."""
    with client_from(ctx) as client:
        found = pick_version(client, ref, version)
    if as_json:
        print_json(found)
        return
    details = table("FIELD", "VALUE", title=found.reference)
    details.show_header = False
    rows = {
        "task": found.task,
        "runtime": f"{found.runtime} ({found.format})",
        "aliases": ", ".join(found.aliases) or "-",
        "description": found.description or "-",
        "tags": compact(found.tags) if found.tags else "-",
        "metrics": compact(found.metrics) if found.metrics else "-",
        "params": compact(found.params) if found.params else "-",
        "source": compact(found.lineage.source),
        "size": f"{human_size(found.size_bytes)} in {len(found.files)} files ({found.storage})",
        "created": f"{when(found.created_at)} by {found.created_by or '-'}",
    }
    for key in ("parent_version", "transform", "dataset_id", "dataset_sha256", "job_id"):
        value = getattr(found.lineage, key)
        if value is not None:
            rows[key] = str(value)
    for key, value in rows.items():
        details.add_row(key, plain(value))
    out.print(details)
    files = table("FILE", "SIZE", "SHA256")
    for entry in found.files:
        files.add_row(plain(entry.path), human_size(entry.size), entry.sha256[:16])
    out.print(files)


@app.command("compare")
def compare_versions(
    ctx: typer.Context,
    name: NameArg,
    a: Annotated[int, typer.Argument(help="First version.", min=1, show_default=False)],
    b: Annotated[int, typer.Argument(help="Second version.", min=1, show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Compare two versions: metrics, params, files and lineage side by side."""
    with client_from(ctx) as client:
        diff = client.compare(name, a, b)
    if as_json:
        print_json(diff)
        return
    print_comparison(diff)


def print_comparison(diff: CompareOut) -> None:
    va, vb = f"v{diff.a}", f"v{diff.b}"
    out.print(plain(f"{diff.model}: version {diff.a} vs {diff.b}"), style="bold")
    grid = table("FIELD", va, vb, title="Changed fields")
    for field, values in diff.fields.items():
        grid.add_row(field, plain(compact(values.get("a"))), plain(compact(values.get("b"))))
    out.print(grid if diff.fields else plain("Fields: identical"))
    metrics = table("METRIC", va, vb, "DELTA", title="Metrics")
    for metric, values in diff.metrics.items():
        delta = values.get("delta")
        style = "green" if delta and delta > 0 else "red" if delta and delta < 0 else ""
        sign = "+" if delta and delta > 0 else ""
        metrics.add_row(
            plain(metric),
            number(values.get("a")),
            number(values.get("b")),
            Text(sign + number(delta), style=style),
        )
    out.print(metrics if diff.metrics else plain("Metrics: none recorded"))
    params = table("PARAM", va, vb, title="Params (differences only)")
    for param, values in diff.params.items():
        params.add_row(
            plain(param), plain(compact(values.get("a"))), plain(compact(values.get("b")))
        )
    out.print(params if diff.params else plain("Params: identical"))
    files = table("CHANGE", "FILE", title=f"Files ({diff.files.unchanged} unchanged)")
    for change, paths, style in (
        ("added", diff.files.added, "green"),
        ("removed", diff.files.removed, "red"),
        ("changed", diff.files.changed, "yellow"),
    ):
        for path in paths:
            files.add_row(Text(change, style=style), plain(path))
    out.print(files if files.row_count else plain("Files: identical"))
    lineage = table("LINEAGE", va, vb, title="Lineage")
    side_a, side_b = diff.lineage.get("a", {}), diff.lineage.get("b", {})
    for key in sorted(set(side_a) | set(side_b)):
        left, right = compact(side_a.get(key)), compact(side_b.get(key))
        if left == right == "-":
            continue  # unknown on both sides: nothing to compare
        style = "" if left == right else "yellow"
        lineage.add_row(Text(key, style=style), plain(left), plain(right))
    out.print(lineage)


@app.command("verify")
def verify_version(
    ctx: typer.Context, ref: RefArg, version: OptionalVersionArg = None, as_json: JsonFlag = False
) -> None:
    """Re-hash a version's stored files; exits 1 when any file does not match."""
    with client_from(ctx) as client:
        target = pick_version(client, ref, version)
        report = client.verify(target.model, target.version)
    if as_json:
        print_json(report)
    elif report.ok:
        out.print(plain(f"ok: {target.reference}: all {report.files_checked} files match"))
    else:
        out.print(
            plain(
                f"FAILED: {target.reference}: {len(report.problems)} problem(s) in "
                f"{report.files_checked} files"
            ),
            style="bold red",
        )
        grid = table("FILE", "PROBLEM")
        for problem in report.problems:
            grid.add_row(plain(problem.path), plain(problem.problem))
        out.print(grid)
    if not report.ok:
        raise typer.Exit(1)


@app.command("edit")
def edit_version(
    ctx: typer.Context,
    name: NameArg,
    version: VersionArg,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    tag: TagOption = None,
    untag: UntagOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Edit a version's description and tags (files never change; edits are recorded)."""
    tags = tag_changes(description, tag, untag)
    with client_from(ctx) as client:
        updated = client.update_version(name, version, description=description, tags=tags or None)
    if as_json:
        print_json(updated)
        return
    out.print(plain(f"Updated {updated.reference}"))


@app.command("history")
def metadata_history(
    ctx: typer.Context,
    name: NameArg,
    version: Annotated[
        int | None,
        typer.Argument(help="Only this version's edits.", min=1, show_default=False),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show recorded metadata edits (description, tags): who changed what, when."""
    with client_from(ctx) as client:
        edits = (
            client.model_history(name) if version is None else client.version_history(name, version)
        )
    if as_json:
        print_json(edits)
        return
    grid = table("WHEN", "TARGET", "ACTOR", "BEFORE", "AFTER")
    for edit in edits:
        target = "model" if edit.version is None else f"v{edit.version}"
        grid.add_row(
            when(edit.created_at),
            target,
            plain(edit.actor or "-"),
            plain(compact(edit.before)),
            plain(compact(edit.after)),
        )
    out.print(grid if edits else plain("No metadata edits recorded."))


@app.command("delete")
def delete_version(
    ctx: typer.Context,
    name: NameArg,
    version: VersionArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one version and its files (refused while an alias points at it)."""
    if not yes:
        if not sys.stdin.isatty():
            raise CLIError(f"refusing to delete {name}:{version} without confirmation: pass --yes")
        typer.confirm(f"Delete {name}:{version} and its files?", abort=True)
    with client_from(ctx) as client:
        client.delete_version(name, version)
    out.print(plain(f"Deleted {name}:{version}"))
