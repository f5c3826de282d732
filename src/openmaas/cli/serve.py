"""`openmaas serve`: run the HTTP server in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (OPENMAAS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (OPENMAAS_PORT).")] = None,
    home: Annotated[Path | None, typer.Option(help="State directory (OPENMAAS_HOME).")] = None,
    preload: Annotated[
        list[str] | None,
        typer.Option(help="Load this model at start and keep it loaded (repeatable)."),
    ] = None,
) -> None:
    """Start the HTTP server with its embedded defaults (SQLite, local artifacts)."""
    # Imported here so the client commands start fast and never load the server stack.
    import uvicorn

    from openmaas.api.app import build_app
    from openmaas.observability.logs import configure_logging
    from openmaas.settings import Settings

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if home is not None:
        overrides["home"] = home
    if preload:
        overrides["preload"] = preload
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our handler: structured, with request ids
        # 10 minutes at most between requests on a keep-alive connection; benchmark
        # clients and proxies hold connections open.
        timeout_keep_alive=600,
    )
