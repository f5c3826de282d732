"""`openmaas datasets ...`: training datasets (upload, list, show, delete).

    openmaas datasets upload train.csv --text-column review --label-column stars
    openmaas datasets list
    openmaas datasets show file-0123456789abcdef01234567 --problems 20
    openmaas datasets delete file-0123456789abcdef01234567

Needs a key with the `training` scope (OPENMAAS_API_KEY). `upload` and `show` exit with 1
when the file failed validation, after printing its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openmaas.cli.common import (
    JsonFlag,
    client_from,
    human_size,
    out,
    plain,
    print_json,
    table,
    when,
)
from openmaas.cli.progress import upload_progress
from openmaas.protocol.datasets import DatasetOut, LengthOut

app = typer.Typer(help="Training datasets: upload, list, show, delete.", no_args_is_help=True)

DatasetArg = Annotated[str, typer.Argument(help="The dataset's id (file-...).", show_default=False)]
ProblemsOption = Annotated[
    int, typer.Option("--problems", help="How many problems of the report to print.", min=0)
]
SHOWN_LABELS = 20


@app.command("upload")
def upload_dataset(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(help="A .jsonl, .csv, .tsv or .conll file.", show_default=False)
    ],
    format: Annotated[  # the API's field name
        str | None, typer.Option(help="jsonl, csv, tsv, conll or text (default: by name, content).")
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="Default: inferred.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Default: inferred.")] = None,
    problems: ProblemsOption = 10,
    as_json: JsonFlag = False,
) -> None:
    """Upload a dataset file; prints its schema, statistics and first problems."""
    with client_from(ctx) as client, upload_progress() as progress:
        dataset = client.upload_dataset(
            path,
            format=format,
            text_column=text_column,
            label_column=label_column,
            progress=progress,
        )
    _finish(dataset, problems, as_json)


@app.command("list")
def list_datasets(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List datasets, newest first."""
    with client_from(ctx) as client:
        datasets = client.list_datasets()
    if as_json:
        print_json(datasets)
        return
    grid = table("ID", "FILE", "FORMAT", "TASK", "ROWS", "STATUS", "SIZE", "CREATED")
    for item in datasets:
        grid.add_row(
            plain(item.id),
            plain(item.filename),
            plain(item.format),
            plain(item.task),
            str(item.rows),
            plain(item.status if not item.errors else f"{item.status} ({item.errors} errors)"),
            human_size(item.bytes),
            plain(when(item.created_at)),
        )
    out.print(grid)


@app.command("show")
def show_dataset(
    ctx: typer.Context,
    dataset_id: DatasetArg,
    problems: ProblemsOption = 10,
    as_json: JsonFlag = False,
) -> None:
    """Show a dataset: schema, statistics and the first problems of its report."""
    with client_from(ctx) as client:
        dataset = client.get_dataset(dataset_id)
    _finish(dataset, problems, as_json)


@app.command("delete")
def delete_dataset(ctx: typer.Context, dataset_id: DatasetArg, as_json: JsonFlag = False) -> None:
    """Delete a dataset and its file."""
    with client_from(ctx) as client:
        deleted = client.delete_dataset(dataset_id)
    if as_json:
        print_json(deleted)
        return
    out.print(plain(f"deleted {deleted.id}"))


def _finish(dataset: DatasetOut, problems: int, as_json: bool) -> None:
    if as_json:
        print_json(dataset)
    else:
        print_dataset(dataset, problems)
    if dataset.status == "error":
        raise typer.Exit(1)


def print_dataset(dataset: DatasetOut, problems: int = 10) -> None:
    schema, stats, report = dataset.schema_, dataset.stats, dataset.report
    details = table("FIELD", "VALUE", title=f"{dataset.id} ({dataset.filename})")
    details.show_header = False
    columns = {
        "text": schema.text_column,
        "label": schema.label_column,
        "tokens": schema.tokens_column,
        "tags": schema.tags_column,
    }
    rows = {
        "status": dataset.status,
        "task": f"{dataset.task} (from {schema.source})",
        "format": f"{schema.format}, {human_size(dataset.bytes)}",
        "columns": ", ".join(f"{role}={name}" for role, name in columns.items() if name) or "-",
        "rows": f"{stats.rows} valid of {report.rows_read} read",
        "duplicates": f"{stats.duplicates} rows, {stats.duplicate_texts} texts, "
        f"{stats.conflicting_labels} texts with conflicting labels",
        "chars": _lengths(stats.chars),
        "words": _lengths(stats.words),
        "content sha256": dataset.content_sha256,
        "created": f"{when(dataset.created_at)} by {dataset.created_by or '-'}",
    }
    for note in schema.notes:
        rows.setdefault("notes", "")
        rows["notes"] = f"{rows['notes']}; {note}" if rows["notes"] else note
    for key, value in rows.items():
        details.add_row(key, plain(value))
    out.print(details)
    if stats.labels:
        title = "Entities" if dataset.task == "token-classification" else "Labels"
        labels = table("LABEL", "COUNT", "SHARE", title=title)
        total = sum(stats.labels.values())
        for label, count in list(stats.labels.items())[:SHOWN_LABELS]:
            labels.add_row(plain(label), str(count), f"{count / total:.1%}")
        if len(stats.labels) > SHOWN_LABELS:
            labels.add_row(plain(f"... {len(stats.labels) - SHOWN_LABELS} more"), "", "")
        out.print(labels)
    if report.problems and problems:
        grid = table(
            "LINE",
            "COLUMN",
            "PROBLEM",
            "HINT",
            title=f"Problems: {report.errors} errors, {report.warnings} warnings",
        )
        for problem in report.problems[:problems]:
            where = "-" if problem.line is None else str(problem.line)
            what = problem.problem if problem.severity == "error" else f"warning: {problem.problem}"
            grid.add_row(where, plain(problem.column or "-"), plain(what), plain(problem.hint))
        out.print(grid)
        hidden = report.errors + report.warnings - min(problems, len(report.problems))
        if hidden > 0:
            out.print(plain(f"... and {hidden} more (see --json or --problems)"))


def _lengths(lengths: LengthOut | None) -> str:
    if lengths is None:
        return "-"
    return (
        f"min {lengths.min}, median {lengths.p50}, p90 {lengths.p90}, p95 {lengths.p95}, "
        f"p99 {lengths.p99}, max {lengths.max}"
    )
