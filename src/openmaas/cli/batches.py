"""`openmaas batches ...`: OpenAI-style batches (create, list, show, cancel, output).

    openmaas batches create requests.jsonl --endpoint /v1/embeddings --wait
    openmaas batches list
    openmaas batches show batch_…
    openmaas batches output batch_… > answers.jsonl      # --errors: the error file
    openmaas batches cancel batch_…

Needs a key with the `inference` scope (OPENMAAS_API_KEY). `create --wait` and `show` exit 1
when the batch failed (its input file's problems are printed), expired or was cancelled.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from openmaas.cli.common import (
    CLIError,
    JsonFlag,
    client_from,
    err,
    out,
    parse_pairs,
    plain,
    print_json,
    table,
)
from openmaas.cli.progress import upload_progress
from openmaas.protocol.batches import BatchOut

app = typer.Typer(
    help="Batches of requests: create, list, show, cancel, output.", no_args_is_help=True
)

BatchArg = Annotated[str, typer.Argument(help="The batch's id (batch_…).", show_default=False)]
UNSUCCESSFUL = ("failed", "expired", "cancelled")


@app.command("create")
def create_batch(
    ctx: typer.Context,
    requests: Annotated[
        str,
        typer.Argument(
            help="A local JSON Lines file of requests (uploaded first), or the id of one "
            "uploaded with purpose batch (file-…).",
            show_default=False,
        ),
    ],
    endpoint: Annotated[
        str, typer.Option(help="The route every request goes to, e.g. /v1/embeddings.")
    ],
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="KEY=VALUE; repeatable.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it has finished.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Create a batch: every request of the file is checked, then run in the background."""
    pairs = parse_pairs(metadata or [], "--metadata")
    with client_from(ctx) as client:
        file_id = requests
        local = Path(requests).expanduser()
        if local.is_file():
            with upload_progress() as progress:
                file_id = client.upload_file(local, purpose="batch", progress=progress).id
        elif not requests.startswith("file-"):
            raise CLIError(f"{requests}: no such file (give a local file or a file-… id)")
        batch = client.create_batch(file_id, endpoint, metadata=pairs)
        if wait and batch.status not in (*UNSUCCESSFUL, "completed"):
            err.print(f"batch {batch.id} {batch.status}; waiting")
            batch = client.wait_for_batch(batch.id)
    _finish(batch, json_output)


@app.command("list")
def list_batches(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    after: Annotated[str | None, typer.Option(help="Continue after this batch id.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Batches of your project, newest first."""
    with client_from(ctx) as client:
        page = client.list_batches(limit=limit, after=after)
    if json_output:
        print_json(page.data)
        return
    grid = table("ID", "STATUS", "ENDPOINT", "DONE", "FAILED", "TOTAL")
    for batch in page.data:
        counts = batch.request_counts
        grid.add_row(
            plain(batch.id),
            plain(batch.status),
            plain(batch.endpoint),
            str(counts.completed),
            str(counts.failed),
            str(counts.total),
        )
    out.print(grid)
    if page.has_more and page.last_id:
        err.print(f"more: openmaas batches list --after {page.last_id}")


@app.command("show")
def show_batch(ctx: typer.Context, batch_id: BatchArg, json_output: JsonFlag = False) -> None:
    """A batch's status, request counts, files and (when it failed) its input's problems."""
    with client_from(ctx) as client:
        batch = client.get_batch(batch_id)
    _finish(batch, json_output)


@app.command("cancel")
def cancel_batch(ctx: typer.Context, batch_id: BatchArg, json_output: JsonFlag = False) -> None:
    """Cancel a batch: the requests in flight finish, the answers so far are kept."""
    with client_from(ctx) as client:
        batch = client.cancel_batch(batch_id)
    if json_output:
        print_json(batch)
        return
    out.print(plain(f"batch {batch.id}: {batch.status}"))


@app.command("output")
def batch_output(
    ctx: typer.Context,
    batch_id: BatchArg,
    errors: Annotated[
        bool, typer.Option("--errors", help="The error file instead of the output file.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """A batch's output file (or error file), one JSON answer a line."""
    with client_from(ctx) as client:
        batch = client.get_batch(batch_id)
        file_id = batch.error_file_id if errors else batch.output_file_id
        if file_id is None:
            which = "error" if errors else "output"
            raise CLIError(f"batch {batch.id} ({batch.status}) has no {which} file")
        content = client.file_content(file_id)
    if output is not None:
        output.write_bytes(content)
        err.print(f"wrote {output}")
    else:
        sys.stdout.buffer.write(content)
        sys.stdout.flush()


def _finish(batch: BatchOut, json_output: bool) -> None:
    if json_output:
        print_json(batch)
    else:
        _print(batch)
    if batch.status in UNSUCCESSFUL:
        raise typer.Exit(1)


def _print(batch: BatchOut) -> None:
    counts = batch.request_counts
    details = table("FIELD", "VALUE", title=batch.id)
    details.show_header = False
    rows = {
        "status": batch.status,
        "endpoint": batch.endpoint,
        "input file": batch.input_file_id,
        "requests": f"{counts.completed} completed, {counts.failed} failed, of {counts.total}",
        "output file": batch.output_file_id or "-",
        "error file": batch.error_file_id or "-",
    }
    for name, value in rows.items():
        details.add_row(name, plain(value))
    out.print(details)
    if batch.errors is not None and batch.errors.data:
        problems = table("LINE", "CODE", "PROBLEM", title="input file problems")
        for problem in batch.errors.data:
            line = "-" if problem.line is None else str(problem.line)
            problems.add_row(line, plain(problem.code), plain(problem.message))
        out.print(problems)
