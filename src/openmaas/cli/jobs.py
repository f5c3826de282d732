"""`openmaas train` and `openmaas jobs`: start training jobs and watch them.

openmaas train textcnn file-1a2b3c --epochs 5 --alias staging
openmaas jobs list
openmaas jobs follow ftjob-…    # a live bar: epoch, step, loss, metric, ETA
openmaas jobs cancel ftjob-…

Following draws a progress bar and the job's messages on stderr (lines only when stderr is
not a terminal) and prints the outcome on stdout. `train` and `follow` exit 0 when the job
succeeded and 1 when it failed or was cancelled; Ctrl-C stops following, not the job.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.text import Text

from openmaas.cli.common import (
    CLIError,
    JsonFlag,
    client_from,
    compact,
    err,
    out,
    parse_pairs,
    plain,
    print_json,
    table,
    when,
)
from openmaas.client import Client
from openmaas.protocol.training import TrainingEventOut, TrainingJobOut

app = typer.Typer(help="Training jobs: list, show, follow, cancel.", no_args_is_help=True)

JobArg = Annotated[str, typer.Argument(help="Job id (ftjob-…).", show_default=False)]
# Validation metrics a progress bar shows, best first (recipes report val_<metric> per epoch).
SHOWN_METRICS = ("val_accuracy", "val_macro_f1", "accuracy", "macro_f1", "val_loss")


def train(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="Recipe, e.g. textcnn.", show_default=False)],
    training_file: Annotated[
        str,
        typer.Argument(
            help="Id of an uploaded file (file-…), or a local file to upload first.",
            show_default=False,
        ),
    ],
    validation_file: Annotated[
        str | None, typer.Option(help="Validation file id (else split off).", show_default=False)
    ] = None,
    base_model: Annotated[
        str | None, typer.Option(help="Registered model to fine-tune.", show_default=False)
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Default: the file's.", show_default=False)
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    learning_rate: Annotated[float | None, typer.Option(min=0, show_default=False)] = None,
    hp: Annotated[
        list[str] | None,
        typer.Option("--hp", help="Recipe hyperparameter KEY=VALUE (JSON value); repeatable."),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(min=1, help="Early stopping: epochs without improvement.", show_default=False),
    ] = None,
    early_stopping_metric: Annotated[
        str | None, typer.Option(help="Validation metric early stopping follows.")
    ] = None,
    class_imbalance: Annotated[
        str | None,
        typer.Option(help="none, weighted (loss weights) or oversample.", show_default=False),
    ] = None,
    validation_split: Annotated[float, typer.Option(min=0, max=0.5)] = 0.1,
    test_split: Annotated[float, typer.Option(min=0.01, max=0.5)] = 0.1,
    seed: Annotated[int | None, typer.Option(min=0, show_default=False)] = None,
    suffix: Annotated[str | None, typer.Option(help="Begins the model's name.")] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Register as this model's next version.")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Alias to move on success.")] = None,
    cross_validation: Annotated[
        int | None,
        typer.Option(min=2, max=20, help="k-fold cross-validation first.", show_default=False),
    ] = None,
    cv_final: Annotated[
        str, typer.Option(help="After cross-validation register: all (folds) or best_fold.")
    ] = "all",
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Print the job and return at once.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Start a training job and follow it to the end."""
    hyperparameters = _hyperparameters(hp, epochs, batch_size, learning_rate)
    early_stopping = None
    if patience is not None or early_stopping_metric is not None:
        early_stopping = {"patience": patience or 2, "metric": early_stopping_metric}
    with client_from(ctx) as client:
        job = client.create_training_job(
            recipe,
            _file_id(client, training_file),
            validation_file=validation_file,
            task=task,
            base_model=base_model,
            hyperparameters=hyperparameters,
            early_stopping=early_stopping,
            class_imbalance=class_imbalance,
            validation_split=validation_split,
            test_split=test_split,
            seed=seed,
            suffix=suffix,
            model_name=model_name,
            alias=alias,
            cross_validation=cross_validation,
            cross_validation_final=cv_final,
        )
        err.print(f"job {job.id} {job.status}; it registers {job.model_name}")
        if detach:
            _print_job(job, json_output)
            return
        _follow(client, job.id, json_output)


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    after: Annotated[str | None, typer.Option(help="Continue after this job id.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Training jobs of your project, newest first."""
    with client_from(ctx) as client:
        page = client.list_training_jobs(limit=limit, after=after)
    if json_output:
        print_json(page.data)
        return
    grid = table("id", "status", "recipe", "model", "progress", "created")
    for job in page.data:
        grid.add_row(
            plain(job.id),
            plain(job.status),
            plain(job.recipe),
            plain(job.fine_tuned_model or job.model_name),
            plain(_progress_text(job)),
            plain(when(job.created_at)),
        )
    out.print(grid)
    if page.has_more:
        err.print(f"more: openmaas jobs list --after {page.data[-1].id}")


@app.command("show")
def show_job(ctx: typer.Context, job_id: JobArg, json_output: JsonFlag = False) -> None:
    """A job's state, hyperparameters, metrics and checkpoints."""
    with client_from(ctx) as client:
        job = client.get_training_job(job_id)
        checkpoints = client.training_job_checkpoints(job_id, limit=5)
    if json_output:
        print_json({**job.model_dump(mode="json"), "checkpoints": checkpoints.data})
        return
    _print_job(job, False)
    if checkpoints.data:
        grid = table("checkpoint", "step", "epoch", "metrics", title="checkpoints")
        for c in checkpoints.data:
            grid.add_row(plain(c.id), plain(c.step), plain(c.epoch), plain(compact(c.metrics)))
        out.print(grid)


@app.command("follow")
def follow_job(ctx: typer.Context, job_id: JobArg, json_output: JsonFlag = False) -> None:
    """Show a job's progress live until it finishes."""
    with client_from(ctx) as client:
        _follow(client, job_id, json_output)


@app.command("cancel")
def cancel_job(ctx: typer.Context, job_id: JobArg, json_output: JsonFlag = False) -> None:
    """Cancel a job: at once when queued; a running one stops within seconds and keeps its
    last checkpoint."""
    with client_from(ctx) as client:
        job = client.cancel_training_job(job_id)
    if json_output:
        print_json(job)
        return
    state = "cancelled" if job.status == "cancelled" else f"{job.status}, stopping"
    out.print(f"job {job.id}: {state}")


# -- following -------------------------------------------------------------------------------


class JobBar:
    """One rich progress bar for a job: epoch, step, loss, validation metric and ETA."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID = progress.add_task("queued", total=None, **_fields())
        self.metrics: dict[str, float] = {}  # the latest value of each, from metrics events
        self.loss: float | None = None
        self.step = 0
        self.epoch = 0
        self.total_steps: int | None = None

    def update(self, job: TrainingJobOut, events: list[TrainingEventOut]) -> None:
        for event in events:
            if event.type == "metrics" and event.data:
                self._read(event.data)
            else:
                # Above the live bar on a terminal; elsewhere (a pipe, a log) the bar is off
                # and each event is one line, unwrapped.
                self.progress.console.print(_event_line(event), soft_wrap=self.progress.disable)
        p = job.progress
        if p is not None:
            self.step, self.epoch = p.step, p.epoch
            self.total_steps = p.total_steps or self.total_steps
        if job.status == "succeeded" and self.total_steps:
            self.step = self.total_steps
        epochs = job.hyperparameters.get("n_epochs")
        metric = next((name for name in SHOWN_METRICS if name in self.metrics), None)
        eta = "-"
        if p is not None and p.estimated_finish is not None:
            eta = _duration((p.estimated_finish - datetime.now(UTC)).total_seconds())
        total = self.total_steps
        self.progress.update(
            self.task,
            description=job.status,
            completed=self.step,
            total=total,
            epoch=f"{self.epoch}/{epochs}" if epochs else str(self.epoch),
            step=f"{self.step}/{total}" if total else str(self.step),
            loss=_short(self.loss),
            metric=f"{metric} {_short(self.metrics[metric])}" if metric else "",
            eta=eta,
        )

    def _read(self, data: dict[str, Any]) -> None:
        values = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
        self.metrics.update(values)
        # Steps report the recent training loss; an epoch's end its mean.
        self.loss = values.get("loss", values.get("train_loss", self.loss))
        self.step = int(values.get("step", self.step))
        self.epoch = int(values.get("epoch", self.epoch))
        total = values.get("total_steps")
        self.total_steps = int(total) if total else self.total_steps


def _fields() -> dict[str, Any]:
    return {"epoch": "-", "step": "-", "loss": "-", "metric": "", "eta": "-"}


def _follow(client: Client, job_id: str, json_output: bool) -> None:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("step {task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[metric]}"),
        TextColumn("ETA {task.fields[eta]}"),
        console=err,
        disable=not err.is_terminal,
    )
    job: TrainingJobOut | None = None
    try:
        with progress:
            bar = JobBar(progress)
            for update in client.follow_training_job(job_id):
                job = update.job
                bar.update(update.job, update.events)
    except KeyboardInterrupt:
        err.print(f"stopped following; the job goes on: openmaas jobs follow {job_id}")
        raise typer.Exit(130) from None
    assert job is not None
    _print_job(job, json_output)
    if job.status == "failed":
        message = (job.error or {}).get("message", "no reason recorded")
        raise CLIError(f"job {job.id} failed: {message}")
    if job.status == "cancelled":
        raise CLIError(f"job {job.id} was cancelled")


def _file_id(client: Client, value: str) -> str:
    """A file id as given, or the id of the local file `value` once uploaded."""
    path = Path(value).expanduser()
    if value.startswith("file-") or not path.is_file():
        return value
    dataset = client.upload_dataset(path)
    if dataset.status != "processed":
        raise CLIError(
            f"{path.name} was uploaded as {dataset.id} but failed validation: "
            f"{dataset.status_details}; see openmaas datasets show {dataset.id}"
        )
    err.print(f"uploaded {path.name} as {dataset.id} ({dataset.stats.rows} rows)")
    return dataset.id


def _print_job(job: TrainingJobOut, json_output: bool) -> None:
    if json_output:
        print_json(job)
        return
    grid = table("field", "value", title=f"job {job.id}")
    rows: list[tuple[str, Any]] = [
        ("status", job.status),
        ("recipe", job.recipe),
        ("task", job.task),
        ("base model", job.base_version or job.base_model),
        ("training file", job.training_file),
        ("validation file", job.validation_file),
        ("hyperparameters", json.dumps(job.hyperparameters, sort_keys=True)),
        ("seed", job.seed),
        ("registers", job.model_name + (f" (alias {job.alias})" if job.alias else "")),
        ("fine-tuned model", job.fine_tuned_model),
        ("test metrics", compact(job.metrics) if job.metrics else None),
        ("progress", _progress_text(job)),
        ("worker", job.worker_id),
        ("lost runs", job.attempts or None),
        ("error", (job.error or {}).get("message")),
        ("created", when(job.created_at)),
        ("finished", when(job.finished_at) if job.finished_at else None),
    ]
    for name, value in rows:
        if value not in (None, ""):
            grid.add_row(name, plain(value))
    out.print(grid)


def _progress_text(job: TrainingJobOut) -> str:
    p = job.progress
    if p is None:
        return ""
    total = f"/{p.total_steps}" if p.total_steps else ""
    return f"epoch {p.epoch}, step {p.step}{total}"


def _event_line(event: TrainingEventOut) -> Text:
    line = Text(event.created_at.astimezone().strftime("%H:%M:%S "), style="dim")
    style = {"error": "red", "warn": "yellow"}.get(event.level, "")
    line.append(event.message, style=style)
    return line


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _hyperparameters(
    pairs: list[str] | None, epochs: int | None, batch_size: int | None, lr: float | None
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, text in parse_pairs(pairs or [], "--hp").items():
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    for key, value in (("n_epochs", epochs), ("batch_size", batch_size), ("learning_rate", lr)):
        if value is not None:
            values[key] = value
    return values
