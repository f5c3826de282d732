"""`openmaas worker`: training workers without an HTTP server, for more machines.

They take jobs from the same database as the servers (PostgreSQL when they run on several
machines; the artifact directory must be shared too), and run until SIGTERM or Ctrl-C, which
lets each finish its step, checkpoint and hand its job back to the queue::

    OPENMAAS_DATABASE_URL=postgresql://maas@db/maas OPENMAAS_ARTIFACTS_DIR=/shared/artifacts \\
        openmaas worker --workers 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openmaas.cli.common import CLIError, err


def worker(
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-n",
            min=1,
            help="Worker processes to run (OPENMAAS_WORKERS, default 1).",
            show_default=False,
        ),
    ] = None,
    home: Annotated[Path | None, typer.Option(help="State directory (OPENMAAS_HOME).")] = None,
) -> None:
    """Run training workers until stopped (SIGTERM or Ctrl-C)."""
    # Imported here so the client commands start fast and never load the server stack.
    from openmaas.errors import OpenMaaSError
    from openmaas.jobs.supervisor import Supervisor
    from openmaas.jobs.worker import StopSignal
    from openmaas.observability.logs import configure_logging
    from openmaas.settings import Settings
    from openmaas.store.database import Database

    overrides: dict[str, object] = {}
    if home is not None:
        overrides["home"] = home
    settings = Settings(**overrides)  # type: ignore[arg-type]
    count = workers if workers is not None else max(1, settings.workers)
    configure_logging(settings.log_level, settings.log_format)
    try:
        db = Database(settings.database_url)
        db.migrate()  # before the workers start, so they do not all wait on it
        db.close()
    except OpenMaaSError as exc:
        raise CLIError(exc.message) from None
    stop = StopSignal()
    stop.install()
    supervisor = Supervisor(settings, count)
    supervisor.start()
    err.print(f"{count} training worker(s) running; Ctrl-C stops them")
    try:
        stop.wait(None)
    finally:
        err.print("stopping the workers (each finishes its step and checkpoints)")
        supervisor.stop()
        stop.close()
