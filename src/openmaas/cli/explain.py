"""`openmaas explain`: which words of a text, or regions of an image, moved a classifier or a
tagger toward a label.

openmaas explain sentiment "a gripping, beautifully shot film"
openmaas explain vader "The food was great but the service was awful" --target negative
openmaas explain tagger "Nelson Mandela met Barack Obama" --span 0:14 --method occlusion --json
openmaas explain shapes --image square.png --grid 4x4 --heatmap heat.png

The table lists the words in input order (an image's regions row by row, with their boxes in
its pixels) with their scores (positive: toward the label), the strongest marked; `--json`
prints the server's answer as it is; `--heatmap FILE` writes an image's regions drawn as a
PNG of its size, to lay over it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer

from openmaas.cli.common import CLIError, JsonFlag, client_from, out, plain, print_json, table
from openmaas.protocol.explanations import ExplainResponse, Method

# Words (regions) marked as the strongest in the table (all are listed).
MARKED_WORDS = 3
PNG_DATA_URL = "data:image/png;base64,"


def explain(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(help="A text classifier, tagger or image classifier: name, name:3, ..."),
    ],
    text: Annotated[
        str | None, typer.Argument(help="The text to explain (or give --image).")
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(help="An image file (PNG, JPEG, ...) to explain instead of a text."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="Label to explain (a tagger: entity type); default the predicted one."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="integrated-gradients or occlusion; default the model's best."),
    ] = None,
    span: Annotated[
        str | None,
        typer.Option(help="Taggers: the entity's characters as START:END (end exclusive)."),
    ] = None,
    grid: Annotated[
        str | None,
        typer.Option(help="Images: the regions as ROWSxCOLS, e.g. 4x4; default the server's."),
    ] = None,
    heatmap: Annotated[
        Path | None,
        typer.Option(help="Images: write the regions' scores drawn as a PNG to this file."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Score every word of a text, or region of an image, toward a label."""
    if method is not None and method not in ("integrated-gradients", "occlusion"):
        raise CLIError(f"--method {method}: use integrated-gradients or occlusion", exit_code=2)
    if (text is None) == (image is None):
        raise CLIError("give a text or --image FILE (one of them)", exit_code=2)
    if image is None and (grid is not None or heatmap is not None):
        raise CLIError("--grid and --heatmap are for --image", exit_code=2)
    if image is not None and not image.is_file():
        raise CLIError(f"--image {image}: no such file", exit_code=2)
    chosen: Method | None = method  # type: ignore[assignment]  # checked just above
    with client_from(ctx) as client:
        if image is not None:
            answer = client.explain(
                model,
                image=image,
                target=target,
                method=chosen,
                grid=_grid(grid),
                heatmap=heatmap is not None,
            )
        else:
            answer = client.explain(model, text, target=target, method=chosen, span=_span(span))
    if heatmap is not None and answer.heatmap is not None:
        heatmap.write_bytes(base64.b64decode(answer.heatmap.removeprefix(PNG_DATA_URL)))
    if json_output:
        print_json(answer)
    elif answer.regions is not None:
        _print_regions(answer)
    else:
        _print(answer)


def _span(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    start, colon, end = value.partition(":")
    if not colon or not start.strip().isdigit() or not end.strip().isdigit():
        raise CLIError(f"--span {value}: write it as START:END, e.g. 0:14", exit_code=2)
    return int(start), int(end)


def _grid(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    rows, cross, cols = value.lower().partition("x")
    if not cross or not rows.strip().isdigit() or not cols.strip().isdigit():
        raise CLIError(f"--grid {value}: write it as ROWSxCOLS, e.g. 4x4", exit_code=2)
    return int(rows), int(cols)


def _heading(answer: ExplainResponse, where: str = "") -> None:
    out.print(
        plain(
            f"{answer.model}: {answer.target.label}{where} ({answer.target.score:.3f}) by "
            f"{answer.method}, {answer.passes} passes"
        )
    )


def _print(answer: ExplainResponse) -> None:
    where = ""
    if answer.target.span is not None:
        where = f" at {answer.target.span.start}:{answer.target.span.end}"
    _heading(answer, where)
    strongest = sorted(answer.words, key=lambda w: -w.score)[:MARKED_WORDS]
    grid = table("word", "start", "end", "score", "")
    for word in answer.words:
        mark = "*" if word in strongest and word.score > 0 else ""
        grid.add_row(plain(word.text), str(word.start), str(word.end), f"{word.score:+.4f}", mark)
    out.print(grid)


def _print_regions(answer: ExplainResponse) -> None:
    regions = answer.regions or []
    _heading(answer)
    strongest = sorted(regions, key=lambda r: -r.score)[:MARKED_WORDS]
    grid = table("row", "col", "x", "y", "width", "height", "score", "")
    for region in regions:
        mark = "*" if region in strongest and region.score > 0 else ""
        grid.add_row(
            str(region.row),
            str(region.col),
            str(region.x),
            str(region.y),
            str(region.width),
            str(region.height),
            f"{region.score:+.4f}",
            mark,
        )
    out.print(grid)
