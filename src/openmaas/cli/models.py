"""`openmaas models ...`: list, show, register, edit and delete registered models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from openmaas.cli.common import (
    CLIError,
    JsonFlag,
    NameArg,
    TagOption,
    UntagOption,
    aliases_text,
    client_from,
    human_size,
    out,
    parse_metrics,
    parse_pairs,
    parse_params,
    plain,
    print_json,
    table,
    tag_changes,
    when,
)
from openmaas.cli.progress import upload_progress, working
from openmaas.client import (
    HubSource,
    OnnxSource,
    PackageSource,
    PathSource,
    ServerSource,
    SpacySource,
)
from openmaas.protocol.registry import VersionOut

app = typer.Typer(
    help="Registered models: list, show, register, edit, delete.", no_args_is_help=True
)


@app.command("list")
def list_models(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List registered models with their newest version and aliases."""
    with client_from(ctx) as client:
        models = client.list_models()
    if as_json:
        print_json(models)
        return
    if not models:
        out.print("No models registered yet. Add one with: openmaas models register NAME PATH")
        return
    # Names are each project's own: an admin sees several projects' models of one name.
    grid = table("NAME", "PROJECT", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION")
    for model in models:
        grid.add_row(
            plain(model.name),
            plain(model.project + (" (public)" if model.public else "")),
            plain(model.latest_version if model.latest_version is not None else "-"),
            plain(aliases_text(model.aliases) or "-"),
            plain(when(model.updated_at)),
            plain(model.description),
        )
    out.print(grid)


@app.command("show")
def show_model(ctx: typer.Context, name: NameArg, as_json: JsonFlag = False) -> None:
    """Show a model's details and all its versions."""
    with client_from(ctx) as client:
        model = client.get_model(name)
        versions = client.list_versions(name)
    if as_json:
        print_json({"model": model, "versions": versions})
        return
    out.print(plain(model.name), style="bold")
    details = table("FIELD", "VALUE")
    details.show_header = False
    details.add_row("description", plain(model.description or "-"))
    details.add_row("tags", plain(_pairs(model.tags)))
    details.add_row("aliases", plain(aliases_text(model.aliases) or "-"))
    details.add_row("created", plain(f"{when(model.created_at)} by {model.created_by or '-'}"))
    details.add_row("updated", plain(when(model.updated_at)))
    out.print(details)
    if versions:
        out.print(versions_table(versions))


def versions_table(versions: list[VersionOut]) -> object:
    grid = table("VERSION", "TASK", "RUNTIME", "FORMAT", "FILES", "SIZE", "ALIASES", "CREATED")
    for v in versions:
        grid.add_row(
            plain(v.version),
            plain(v.task),
            plain(v.runtime),
            plain(v.format),
            plain(len(v.files)),
            plain(human_size(v.size_bytes)),
            plain(", ".join(v.aliases) or "-"),
            plain(when(v.created_at)),
        )
    return grid


@app.command(
    "register",
    # One string, not a docstring: the help renderer keeps a docstring's line breaks.
    help="Register a new version of NAME (the model is created on first use). Uploads PATH "
    "from this machine by default, with a progress bar; use --server-path, --spacy, --package, "
    "--onnx or --hub for files the server reads itself.",
)
def register(
    ctx: typer.Context,
    name: NameArg,
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Local model directory, .tar.gz or .keras file to upload (a server path with "
            "--server-path). Omit it with --spacy, --package, --onnx or --hub.",
            show_default=False,
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Task, e.g. embedding; detected when omitted.")
    ] = None,
    description: Annotated[str, typer.Option(help="Description of this version.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE tag; repeatable.")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="KEY=NUMBER metric; repeatable.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE parameter (VALUE read as JSON when it parses); repeatable."),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    server_path: Annotated[
        bool,
        typer.Option(
            "--server-path", help="PATH is on the server's filesystem: register it, no upload."
        ),
    ] = False,
    spacy: Annotated[
        str | None, typer.Option(help="Installed spaCy pipeline package on the server.")
    ] = None,
    package: Annotated[
        str | None,
        typer.Option(help="Installed Python distribution on the server that ships a model."),
    ] = None,
    subpath: Annotated[
        str | None, typer.Option(help="With --package: the model directory inside it.")
    ] = None,
    onnx: Annotated[str | None, typer.Option(help=".onnx file on the server.")] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="With --onnx: tokenizer directory on the server.")
    ] = None,
    hub: Annotated[
        str | None, typer.Option(help="Hugging Face Hub repo id (the server downloads it).")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="With --hub: branch, tag or commit.")] = None,
    as_json: JsonFlag = False,
) -> None:
    source = _server_source(
        path, server_path, spacy, package, subpath, onnx, tokenizer, hub, revision
    )
    if source is None and path is None:
        raise CLIError(
            "nothing to register: give a PATH to upload, or one of --server-path PATH, "
            "--spacy, --package, --onnx, --hub",
            exit_code=2,
        )
    tags = parse_pairs(tag or [], "--tag")
    metrics = parse_metrics(metric or [])
    params = parse_params(param or [])
    with client_from(ctx) as client:
        if source is not None:
            with working(f"Registering {name} (the server hashes every file)..."):
                version = client.register(
                    name,
                    source,
                    task=task,
                    description=description,
                    tags=tags,
                    metrics=metrics,
                    params=params,
                    alias=alias,
                )
        else:
            assert path is not None
            with upload_progress() as progress:
                version = client.upload(
                    name,
                    path,
                    task=task,
                    description=description,
                    tags=tags,
                    metrics=metrics,
                    params=params,
                    alias=alias,
                    progress=progress,
                )
    if as_json:
        print_json(version)
        return
    out.print(
        plain(
            f"Registered {version.reference}: {version.task}, {version.runtime}/{version.format}, "
            f"{len(version.files)} files, {human_size(version.size_bytes)}"
        )
    )
    if alias is not None:
        out.print(plain(f"Alias {alias} → {version.version}"))


def _server_source(
    path: Path | None,
    server_path: bool,
    spacy: str | None,
    package: str | None,
    subpath: str | None,
    onnx: str | None,
    tokenizer: str | None,
    hub: str | None,
    revision: str | None,
) -> ServerSource | None:
    """The source the server reads itself, or None for an upload of PATH."""
    chosen = [
        flag
        for flag, value in (
            ("--server-path", server_path or None),
            ("--spacy", spacy),
            ("--package", package),
            ("--onnx", onnx),
            ("--hub", hub),
        )
        if value
    ]
    if len(chosen) > 1:
        raise CLIError(f"choose one source, not {' and '.join(chosen)}", exit_code=2)
    if subpath is not None and package is None:
        raise CLIError("--subpath only applies with --package", exit_code=2)
    if tokenizer is not None and onnx is None:
        raise CLIError("--tokenizer only applies with --onnx", exit_code=2)
    if revision is not None and hub is None:
        raise CLIError("--revision only applies with --hub", exit_code=2)
    if chosen and chosen[0] != "--server-path" and path is not None:
        raise CLIError(f"PATH and {chosen[0]} are two sources; give only one", exit_code=2)
    if server_path:
        if path is None:
            raise CLIError("--server-path needs PATH (a path on the server)", exit_code=2)
        # Sent as typed: the path is the server's, so it must not be resolved here.
        return PathSource(path=str(path))
    if spacy:
        return SpacySource(package=spacy)
    if package:
        return PackageSource(distribution=package, subpath=subpath)
    if onnx:
        return OnnxSource(path=onnx, tokenizer_path=tokenizer)
    if hub:
        return HubSource(repo_id=hub, revision=revision)
    return None


@app.command("edit")
def edit_model(
    ctx: typer.Context,
    name: NameArg,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    tag: TagOption = None,
    untag: UntagOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Edit a model's description and tags (each change is kept in its history)."""
    tags = tag_changes(description, tag, untag)
    with client_from(ctx) as client:
        model = client.update_model(name, description=description, tags=tags or None)
    if as_json:
        print_json(model)
        return
    out.print(plain(f"Updated {model.name}: tags {_pairs(model.tags)}"))


@app.command("delete")
def delete_model(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a model with all its versions and their stored files."""
    with client_from(ctx) as client:
        if not yes:
            if not sys.stdin.isatty():
                raise CLIError(f"refusing to delete {name!r} without confirmation: pass --yes")
            count = len(client.list_versions(name))  # also fails early on an unknown name
            typer.confirm(
                f"Delete model {name!r} with its {count} version(s) and their files?", abort=True
            )
        client.delete_model(name)
    out.print(plain(f"Deleted model {name}"))


def _pairs(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"
