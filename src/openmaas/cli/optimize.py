"""`openmaas optimize`: optimization jobs (ONNX export, int8 quantization) and their results.

openmaas optimize methods
openmaas optimize run all-minilm-l6-v2 quantize --set per_channel=false
openmaas optimize list
openmaas optimize show optjob-…
openmaas optimize cancel optjob-…

`run` waits for the job (unless `--no-wait`) and prints the new version and its measured
deltas; it exits 1 when the job failed or was cancelled.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

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
    when,
)
from openmaas.protocol.optimization import OptimizationJobOut

app = typer.Typer(
    help="Optimization jobs: export to ONNX, quantize to int8; list, show, cancel.",
    no_args_is_help=True,
)

JobArg = Annotated[str, typer.Argument(help="Job id (optjob-…).", show_default=False)]


@app.command("run")
def run_job(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The registered model to optimize.")],
    method: Annotated[
        str, typer.Argument(help="onnx | quantize | ... (openmaas optimize methods)")
    ],
    setting: Annotated[
        list[str] | None,
        typer.Option("--set", help="Method setting KEY=VALUE (JSON value); repeatable."),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Default: <model>-<method's suffix>, e.g. -int8.")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Moved to the new version.")] = None,
    eval_file: Annotated[
        str | None, typer.Option(help="A labelled file id to measure quality on.")
    ] = None,
    training_file: Annotated[
        str | None, typer.Option(help="The file id a learning method learns from.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish.")] = True,
    json_output: JsonFlag = False,
) -> None:
    """Start an optimization job (and wait for it)."""
    settings = {
        key: _json_value(value) for key, value in parse_pairs(setting or [], "--set").items()
    }
    with client_from(ctx) as client:
        job = client.create_optimization_job(
            model,
            method,
            settings=settings,
            model_name=model_name,
            alias=alias,
            eval_file=eval_file,
            training_file=training_file,
        )
        if wait:
            err.print(f"job {job.id}: {job.status}; waiting")
            job = client.wait_for_optimization_job(job.id)
    if json_output:
        print_json(job)
    else:
        _print_job(job)
    if wait and job.status != "succeeded":
        raise typer.Exit(1)


@app.command("methods")
def list_methods(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """The methods, their settings' defaults, and the models they apply to."""
    with client_from(ctx) as client:
        methods = client.list_optimization_methods()
    if json_output:
        print_json(methods)
        return
    grid = table("method", "applies to", "settings", "what it does")
    for method in methods:
        grid.add_row(
            plain(method.name),
            plain(f"{'/'.join(method.runtimes)} {'/'.join(method.tasks)}"),
            plain(", ".join(f"{k}={json.dumps(v)}" for k, v in method.settings.items())),
            plain(method.summary),
        )
    out.print(grid)


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    after: Annotated[str | None, typer.Option(help="Last job id of the previous page.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Optimization jobs, newest first."""
    with client_from(ctx) as client:
        page = client.list_optimization_jobs(limit=limit, after=after)
    if json_output:
        print_json(page.data)
        return
    grid = table("id", "status", "method", "parent", "model", "created")
    for job in page.data:
        grid.add_row(
            plain(job.id),
            plain(job.status),
            plain(job.method),
            plain(job.parent_version or job.model),
            plain(job.optimized_model or job.model_name),
            plain(when(job.created_at)),
        )
    out.print(grid)
    if page.has_more:
        err.print(f"more: openmaas optimize list --after {page.data[-1].id}")


@app.command("show")
def show_job(ctx: typer.Context, job_id: JobArg, json_output: JsonFlag = False) -> None:
    """A job's state, settings and measured deltas."""
    with client_from(ctx) as client:
        job = client.get_optimization_job(job_id)
    if json_output:
        print_json(job)
        return
    _print_job(job)


@app.command("cancel")
def cancel_job(ctx: typer.Context, job_id: JobArg, json_output: JsonFlag = False) -> None:
    """Cancel a job: at once when queued; a running one stops at its next step."""
    with client_from(ctx) as client:
        job = client.cancel_optimization_job(job_id)
    if json_output:
        print_json(job)
        return
    out.print(f"job {job.id}: {job.status}")


def _print_job(job: OptimizationJobOut) -> None:
    out.print(f"job {job.id}: {job.status} ({job.method} of {job.parent_version or job.model})")
    if job.optimized_model:
        out.print(f"registered {job.optimized_model}")
    if job.error:
        out.print(f"error: {job.error.get('message')}")
    if job.metrics:
        grid = table("metric", "value")
        for name, value in sorted(job.metrics.items()):
            grid.add_row(plain(name), plain(f"{value:.4g}"))
        out.print(grid)


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        if not text:
            raise CLIError("--set expects KEY=VALUE with a value", exit_code=2) from None
        return text  # a bare word: a string
