"""`openmaas search` and `openmaas jobs trials`: hyperparameter searches and their trials.

openmaas search textcnn reviews.jsonl --trials 20            # the recipe's default space
openmaas search textcnn file-1a2b --space space.json --metric val_accuracy --timeout 1800
openmaas jobs trials ftjob-… [--follow]

While a search runs, a live table of its trials (number, state, hyperparameters, the
searched metric, epochs, duration) is drawn on stderr on a terminal; elsewhere each trial's
start and end is a line. The final table goes to stdout. Exit 0 when the search succeeded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from openmaas.cli.common import CLIError, JsonFlag, client_from, err, out, print_json
from openmaas.cli.jobs import _file_id, _hyperparameters, _print_job
from openmaas.client import Client
from openmaas.protocol.training import TrainingJobOut, TrialOut

POLL_S = 1.0
STATE_STYLES = {"complete": "green", "pruned": "yellow", "failed": "red", "running": "cyan"}


def search(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="Recipe, e.g. textcnn.", show_default=False)],
    training_file: Annotated[
        str,
        typer.Argument(help="Id of an uploaded file, or a local file to upload first."),
    ],
    space: Annotated[
        str | None,
        typer.Option(
            help="The space as JSON, or a JSON file; the recipe's default space when left out.",
            show_default=False,
        ),
    ] = None,
    trials: Annotated[int, typer.Option("--trials", min=1, max=500)] = 20,
    metric: Annotated[
        str | None, typer.Option(help="Validation metric, e.g. val_macro_f1.", show_default=False)
    ] = None,
    direction: Annotated[
        str | None, typer.Option(help="maximize or minimize.", show_default=False)
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Seconds of trials at most.", show_default=False)
    ] = None,
    no_pruning: Annotated[bool, typer.Option("--no-pruning", help="Run every trial whole.")] = (
        False
    ),
    startup_trials: Annotated[
        int, typer.Option(min=0, max=500, help="Trials run whole before any is pruned.")
    ] = 5,
    epochs: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    hp: Annotated[
        list[str] | None,
        typer.Option("--hp", help="Fixed hyperparameter KEY=VALUE (JSON value); repeatable."),
    ] = None,
    seed: Annotated[int | None, typer.Option(min=0, show_default=False)] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Register the best trial as this model's next version.")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Alias to move on success.")] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Print the job and return at once.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Search a recipe's hyperparameters; the best trial is registered."""
    with client_from(ctx) as client:
        job = client.create_search_job(
            recipe,
            _file_id(client, training_file),
            space=_space(space),
            metric=metric,
            direction=direction,
            n_trials=trials,
            timeout_s=timeout,
            pruning=not no_pruning,
            startup_trials=startup_trials,
            hyperparameters=_hyperparameters(hp, epochs, None, None),
            seed=seed,
            model_name=model_name,
            alias=alias,
        )
        err.print(f"search {job.id} {job.status}; it registers {job.model_name}")
        if detach:
            _print_job(job, json_output)
            return
        _watch(client, job.id, json_output)


def trials(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Search job id (ftjob-…).", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Live until it ends.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """A search job's trials: hyperparameters, metric, state, epochs, duration."""
    with client_from(ctx) as client:
        if follow:
            _watch(client, job_id, json_output)
            return
        job = client.get_training_job(job_id)
        rows = client.training_job_trials(job_id)
    if json_output:
        print_json(rows)
        return
    out.print(trials_table(job, rows))


def trials_table(job: TrainingJobOut, rows: list[TrialOut]) -> Table:
    metric = str((job.search or {}).get("metric", "value"))
    names = sorted({name for row in rows for name in row.params})
    done = sum(row.state in ("complete", "pruned", "failed") for row in rows)
    total = (job.search or {}).get("n_trials", "?")
    grid = Table(title=f"search {job.id}: {job.status}, {done}/{total} trials")
    for column in ("trial", "state", *names, metric, "epochs", "seconds"):
        grid.add_column(column)
    best = _best(job, rows)
    for row in rows:
        style = STATE_STYLES.get(row.state, "")
        grid.add_row(
            str(row.number) + (" *" if best is not None and row.number == best else ""),
            f"[{style}]{row.state}[/]" if style else row.state,
            *(_cell(row.params.get(name)) for name in names),
            _cell(row.value),
            str(row.epochs),
            _cell(row.duration_s),
        )
    return grid


def _watch(client: Client, job_id: str, json_output: bool) -> None:
    """Redraw the trials table until the job ends (lines of events off a terminal)."""
    job = client.get_training_job(job_id)
    rows: list[TrialOut] = []
    seen: dict[int, str] = {}
    try:
        with Live(console=err, auto_refresh=False, transient=True) as live:
            while True:
                job = client.get_training_job(job_id)
                rows = client.training_job_trials(job_id)
                if err.is_terminal:
                    live.update(trials_table(job, rows), refresh=True)
                else:
                    for row in rows:
                        if seen.get(row.number) != row.state:
                            seen[row.number] = row.state
                            err.print(f"trial {row.number} {row.state} {_cell(row.value)}")
                if job.finished:
                    break
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        err.print(f"stopped following; the search goes on: openmaas jobs trials {job_id} -f")
        raise typer.Exit(130) from None
    if json_output:
        print_json({"job": job, "trials": rows})
    else:
        out.print(trials_table(job, rows))
        _print_job(job, False)
    if job.status != "succeeded":
        message = (job.error or {}).get("message", job.status)
        raise CLIError(f"search {job.id} {job.status}: {message}")


def _best(job: TrainingJobOut, rows: list[TrialOut]) -> int | None:
    complete = [row for row in rows if row.state == "complete" and row.value is not None]
    if not complete:
        return None
    minimize = (job.search or {}).get("direction") == "minimize"
    chosen = (min if minimize else max)(complete, key=lambda row: row.value or 0.0)
    return chosen.number


def _space(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    text = value
    path = Path(value).expanduser()
    if not value.lstrip().startswith("{") and path.is_file():
        text = path.read_text(encoding="utf-8")
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise CLIError(f"--space: not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise CLIError("--space: a JSON object of {name: range}")
    return parsed


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
