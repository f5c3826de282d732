"""`openmaas evaluate`: score a registered model on a labelled file, and read the reports.

openmaas evaluate run sentiment:3 file-1a2b --compare-to sentiment:2
openmaas evaluate run sentiment labelled.jsonl      # a local file is uploaded first
openmaas evaluate list --model sentiment:3
openmaas evaluate show evaljob-…
openmaas evaluate cancel evaljob-…

`run` waits for the evaluation (unless `--no-wait`), drawing the examples scored on stderr
when it is a terminal, then prints the report; it exits 1 when the evaluation failed or was
cancelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from openmaas.cli.common import (
    CLIError,
    JsonFlag,
    client_from,
    err,
    out,
    plain,
    print_json,
    table,
    when,
)
from openmaas.client import Client
from openmaas.client.resource import wait_until
from openmaas.protocol.evaluation import EvaluationOut, EvaluationReportOut

app = typer.Typer(
    help="Evaluations: score a registered model on a labelled file; list, show, cancel.",
    no_args_is_help=True,
)

EvaluationArg = Annotated[
    str, typer.Argument(help="Evaluation id (evaljob-…).", show_default=False)
]
POLL_S = 1.0
SHOWN_WORST = 5  # worst examples printed (all are in --json)


@app.command("run")
def run_evaluation(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The registered model: name, name:3, name@alias.")],
    file: Annotated[str, typer.Argument(help="A dataset's file id, or a local file to upload.")],
    compare_to: Annotated[
        str | None, typer.Option(help="Another version, scored on the same file.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the evaluation to finish.")] = True,
    json_output: JsonFlag = False,
) -> None:
    """Start an evaluation (and wait for it)."""
    with client_from(ctx) as client:
        evaluation = client.create_evaluation(model, _file_id(client, file), compare_to=compare_to)
        if wait:
            err.print(f"evaluation {evaluation.id}: {evaluation.status}; waiting")
            evaluation = _wait(client, evaluation.id)
    if json_output:
        print_json(evaluation)
    else:
        _print_evaluation(evaluation)
    if wait and evaluation.status != "succeeded":
        raise typer.Exit(1)


@app.command("list")
def list_evaluations(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only evaluations of this version.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    after: Annotated[str | None, typer.Option(help="Last id of the previous page.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Evaluations, newest first."""
    with client_from(ctx) as client:
        page = client.list_evaluations(model=model, limit=limit, after=after)
    if json_output:
        print_json(page.data)
        return
    grid = table("id", "status", "model", "file", "compared to", "headline", "created")
    for evaluation in page.data:
        grid.add_row(
            plain(evaluation.id),
            plain(evaluation.status),
            plain(evaluation.model_version),
            plain(evaluation.file),
            plain(evaluation.compare_to_version or ""),
            plain(_headline(evaluation.metrics)),
            plain(when(evaluation.created_at)),
        )
    out.print(grid)
    if page.has_more:
        err.print(f"more: openmaas evaluate list --after {page.data[-1].id}")


@app.command("show")
def show_evaluation(
    ctx: typer.Context, evaluation_id: EvaluationArg, json_output: JsonFlag = False
) -> None:
    """An evaluation's state and report."""
    with client_from(ctx) as client:
        evaluation = client.get_evaluation(evaluation_id)
    if json_output:
        print_json(evaluation)
        return
    _print_evaluation(evaluation)


@app.command("cancel")
def cancel_evaluation(
    ctx: typer.Context, evaluation_id: EvaluationArg, json_output: JsonFlag = False
) -> None:
    """Cancel an evaluation: at once when queued; a running one stops at its next batch."""
    with client_from(ctx) as client:
        evaluation = client.cancel_evaluation(evaluation_id)
    if json_output:
        print_json(evaluation)
        return
    out.print(f"evaluation {evaluation.id}: {evaluation.status}")


def _wait(client: Client, evaluation_id: str) -> EvaluationOut:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("examples"),
        console=err,
        disable=not err.is_terminal,
    )
    with progress:
        bar = progress.add_task("queued", total=None)

        def fetch() -> EvaluationOut:
            evaluation = client.get_evaluation(evaluation_id)
            scored = evaluation.progress
            progress.update(
                bar,
                description=evaluation.status,
                completed=scored.examples_scored if scored else 0,
                total=scored.total if scored else None,
            )
            return evaluation

        try:
            return wait_until(
                fetch,
                lambda evaluation: evaluation.finished,
                lambda evaluation: f"evaluation {evaluation_id} is still {evaluation.status}",
                poll_s=POLL_S,
                timeout_s=None,
            )
        except KeyboardInterrupt:
            err.print(
                f"stopped waiting; the evaluation goes on: openmaas evaluate show {evaluation_id}"
            )
            raise typer.Exit(130) from None


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


def _headline(metrics: dict[str, float]) -> str:
    shown = [name for name in ("accuracy", "macro_f1", "entity_f1") if name in metrics]
    return ", ".join(f"{name} {metrics[name]:.4g}" for name in shown)


def _print_evaluation(evaluation: EvaluationOut) -> None:
    compared = f" against {evaluation.compare_to_version}" if evaluation.compare_to_version else ""
    out.print(
        f"evaluation {evaluation.id}: {evaluation.status} ({evaluation.model_version}"
        f"{compared} on {evaluation.file})"
    )
    if evaluation.error:
        out.print(f"error: {evaluation.error.get('message')}")
    report = evaluation.report
    if report is None:
        return
    columns = [report.model] + ([evaluation.compared.model, "delta"] if evaluation.compared else [])
    grid = table("metric", *columns, title=f"{report.n_examples} examples")
    for name, value in report.metrics.items():
        row = [f"{value:.4g}"]
        if evaluation.compared is not None:
            other = evaluation.compared.metrics.get(name)
            delta = evaluation.deltas.get(name)
            row += [
                f"{other:.4g}" if other is not None else "",
                f"{delta:+.4g}" if delta is not None else "",
            ]
        grid.add_row(plain(name), *(plain(cell) for cell in row))
    out.print(grid)
    _print_classes(report)
    if report.confusion_matrix is not None:
        matrix = table("true \\ predicted", *report.labels, title="confusion matrix")
        for label, counts in zip(report.labels, report.confusion_matrix, strict=True):
            matrix.add_row(plain(label), *(plain(count) for count in counts))
        out.print(matrix)
    if report.worst_examples:
        worst = table("#", "score", "expected", "predicted", "text", title="worst examples")
        for example in report.worst_examples[:SHOWN_WORST]:
            expected = example.label or ", ".join(
                f"{m.text} ({m.label})" for m in example.expected_entities or []
            )
            predicted = example.predicted or ", ".join(
                f"{m.text} ({m.label})" for m in example.predicted_entities or []
            )
            worst.add_row(
                plain(example.index),
                plain(f"{example.score:.3g}"),
                plain(expected),
                plain(predicted),
                plain(example.text),
            )
        out.print(worst)


def _print_classes(report: EvaluationReportOut) -> None:
    if not report.per_class:
        return
    grid = table("label", "precision", "recall", "f1", "support", "predicted", title="per class")
    for c in report.per_class:
        grid.add_row(
            plain(c.label),
            plain(f"{c.precision:.4g}"),
            plain(f"{c.recall:.4g}"),
            plain(f"{c.f1:.4g}"),
            plain(c.support),
            plain(c.predicted),
        )
    out.print(grid)
