"""`openmaas`: run the server and manage the registry from a terminal.

Every command except `serve` talks to a running server through the Python SDK::

    openmaas serve &
    openmaas models register sentiment ./my-model --metric acc=0.91 --alias staging
    openmaas alias set sentiment production 1 --reason "first release"
    openmaas models list --json | jq '.[].name'

Exit codes: 0 success; 1 the request failed, the server is unreachable or verification
found a problem; 2 the command line is wrong; 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from openmaas.cli import (
    admin,
    aliases,
    audit,
    batches,
    catalog,
    datasets,
    evaluate,
    keys,
    models,
    optimize,
    usage,
    versions,
)
from openmaas.cli.common import CLIError, Connection
from openmaas.cli.jobs import app as jobs_app
from openmaas.cli.jobs import train
from openmaas.cli.search import search, trials
from openmaas.cli.serve import serve
from openmaas.cli.worker import worker
from openmaas.client import DEFAULT_URL, APIError

app = typer.Typer(
    name="openmaas",
    help="OpenMaaS: self-hosted Model-as-a-Service.",
    epilog="Exit codes: 0 ok, 1 failed (request refused, server unreachable, verification "
    "failed), 2 bad command line.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            envvar="OPENMAAS_URL",
            help="Base URL of the OpenMaaS server.",
            show_envvar=True,
        ),
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="OPENMAAS_API_KEY",
            help="API key, sent as a bearer token.",
            show_envvar=True,
            show_default=False,
        ),
    ] = None,
) -> None:
    """OpenMaaS: self-hosted Model-as-a-Service."""
    ctx.obj = Connection(url=url, api_key=api_key or None)


app.command(help="Start the HTTP server (SQLite and local artifacts by default).")(serve)
app.add_typer(models.app, name="models")
app.add_typer(versions.app, name="versions")
app.add_typer(aliases.app, name="alias")
app.add_typer(catalog.app, name="catalog")
app.add_typer(admin.app, name="admin")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(keys.projects_app, name="projects")
app.add_typer(datasets.app, name="datasets")
app.command("usage")(usage.show_usage)
app.command("audit")(audit.show_audit)
app.command("train")(train)
app.add_typer(jobs_app, name="jobs")
app.command("search")(search)
jobs_app.command("trials")(trials)
app.add_typer(batches.app, name="batches")
app.add_typer(optimize.app, name="optimize")
app.add_typer(evaluate.app, name="evaluate")
app.command(help="Run training workers without a server (against the server's database).")(worker)


def _fail(message: str, exit_code: int) -> None:
    # One line, never a traceback: scripts read it and people see the cause at once.
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    sys.exit(exit_code)


def main() -> None:
    try:
        # standalone_mode=False hands usage errors to us, so they get the same one-line
        # shape as failed requests.
        result = app(standalone_mode=False)
    except typer.Abort:
        _fail("aborted", 1)
    except typer.TyperException as exc:  # click's errors (typer vendors click)
        if type(exc).__name__ == "NoArgsIsHelpError":
            # `openmaas models` alone: typer has already printed the group's help.
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if exc.exit_code == 2 and ctx else ""
        _fail(exc.format_message() + hint, exc.exit_code)
    except APIError as exc:
        message = exc.message
        if (exc.status_code or 0) >= 500 and exc.request_id and exc.request_id not in message:
            message += f" (request id {exc.request_id})"
        _fail(message, 1)
    except CLIError as exc:
        _fail(exc.message, exc.exit_code)
    except (OSError, ValueError) as exc:
        # Local problems: a missing directory, an unreadable archive, a bad JSON option.
        _fail(str(exc) or type(exc).__name__, 1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
