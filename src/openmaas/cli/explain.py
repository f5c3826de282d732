"""`openmaas explain`: which words of a text moved a classifier or a tagger toward a label.

openmaas explain sentiment "a gripping, beautifully shot film"
openmaas explain vader "The food was great but the service was slow" --target negative
openmaas explain tagger "Nelson Mandela met Barack Obama" --span 0:14 --method occlusion --json

The table lists the words in input order with their scores (positive: toward the label),
the strongest marked; `--json` prints the server's answer as it is.
"""

from __future__ import annotations

from typing import Annotated

import typer

from openmaas.cli.common import CLIError, JsonFlag, client_from, out, plain, print_json, table
from openmaas.protocol.explanations import ExplainResponse, Method

# Words marked as the strongest in the table (all are listed).
MARKED_WORDS = 3


def explain(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="A text classifier or tagger: name, name:3, name@alias.")
    ],
    text: Annotated[str, typer.Argument(help="The text to explain.")],
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
    json_output: JsonFlag = False,
) -> None:
    """Score every word of a text toward a label (integrated gradients or occlusion)."""
    if method is not None and method not in ("integrated-gradients", "occlusion"):
        raise CLIError(f"--method {method}: use integrated-gradients or occlusion", exit_code=2)
    chosen: Method | None = method  # type: ignore[assignment]  # checked just above
    with client_from(ctx) as client:
        answer = client.explain(model, text, target=target, method=chosen, span=_span(span))
    if json_output:
        print_json(answer)
    else:
        _print(answer)


def _span(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    start, colon, end = value.partition(":")
    if not colon or not start.strip().isdigit() or not end.strip().isdigit():
        raise CLIError(f"--span {value}: write it as START:END, e.g. 0:14", exit_code=2)
    return int(start), int(end)


def _print(answer: ExplainResponse) -> None:
    where = ""
    if answer.target.span is not None:
        where = f" at {answer.target.span.start}:{answer.target.span.end}"
    out.print(
        plain(
            f"{answer.model}: {answer.target.label}{where} ({answer.target.score:.3f}) by "
            f"{answer.method}, {answer.passes} passes"
        )
    )
    strongest = sorted(answer.words, key=lambda w: -w.score)[:MARKED_WORDS]
    grid = table("word", "start", "end", "score", "")
    for word in answer.words:
        mark = "*" if word in strongest and word.score > 0 else ""
        grid.add_row(plain(word.text), str(word.start), str(word.end), f"{word.score:+.4f}", mark)
    out.print(grid)
