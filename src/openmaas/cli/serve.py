"""`openmaas serve`: run the HTTP server in this process (HTTPS with a certificate)."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from openmaas.cli.common import CLIError

if TYPE_CHECKING:
    from openmaas.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (OPENMAAS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (OPENMAAS_PORT).")] = None,
    home: Annotated[Path | None, typer.Option(help="State directory (OPENMAAS_HOME).")] = None,
    preload: Annotated[
        list[str] | None,
        typer.Option(help="Load this model at start and keep it loaded (repeatable)."),
    ] = None,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(
            help="TLS certificate chain (PEM): serve HTTPS; needs --ssl-keyfile "
            "(OPENMAAS_SSL_CERTFILE).",
            show_default=False,
        ),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(
            help="The certificate's private key (PEM, unencrypted) (OPENMAAS_SSL_KEYFILE).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Training worker processes to run beside the server; 0: none "
            "(OPENMAAS_WORKERS, default 1).",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Serve models on Ray Serve: `auto` or the head's HOST:PORT "
            "(OPENMAAS_RAY_ADDRESS; docs/scaling.md).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the HTTP server with its embedded defaults (SQLite, local artifacts)."""
    # Imported here so the client commands start fast and never load the server stack.
    import uvicorn

    from openmaas.api.app import build_app
    from openmaas.errors import OpenMaaSError
    from openmaas.observability.logs import configure_logging
    from openmaas.observability.tracing import configure_tracing
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
    if ssl_certfile is not None:
        overrides["ssl_certfile"] = ssl_certfile
    if ssl_keyfile is not None:
        overrides["ssl_keyfile"] = ssl_keyfile
    if workers is not None:
        overrides["workers"] = workers
    if ray is not None:
        overrides["ray_address"] = ray
    settings = Settings(**overrides)  # type: ignore[arg-type]
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    tls = tls_files(settings)
    configure_logging(settings.log_level, settings.log_format)
    tracing = configure_tracing(settings, service="openmaas-api")  # None: off
    try:
        app = build_app(settings)
    except OpenMaaSError as exc:  # a malformed encryption key, an unusable key file, ...
        raise CLIError(exc.message) from None
    from openmaas.jobs.supervisor import running_workers

    # Training runs in worker processes, never in this one; they stop when the server does.
    with running_workers(settings):
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,  # keep our handler: structured, with request ids
            # 10 minutes at most between requests on a keep-alive connection; benchmark
            # clients and proxies hold connections open.
            timeout_keep_alive=600,
            # uvicorn believes X-Forwarded-For from 127.0.0.1 by default (FORWARDED_ALLOW_IPS),
            # rewriting the client address before the app sees it: a local guesser could pick
            # a fresh address per attempt. OPENMAAS_TRUSTED_PROXIES decides instead.
            proxy_headers=False,
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
    if tracing is not None:
        tracing.shutdown()  # sends the spans still buffered


def tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """The certificate and key to serve HTTPS with (None: plain HTTP), checked now so that a
    mistake is one clear line instead of a traceback from the server's first handshake."""
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("certfile", "keyfile") if cert is not None else ("keyfile", "certfile")
        raise CLIError(
            f"--ssl-{given} needs --ssl-{missing} too: TLS takes a certificate and its private "
            f"key (or set OPENMAAS_SSL_CERTFILE and OPENMAAS_SSL_KEYFILE)",
            exit_code=2,
        )
    for option, path in (("--ssl-certfile", cert), ("--ssl-keyfile", key)):
        if not path.is_file():
            raise CLIError(f"{option} {path}: no such file", exit_code=2)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # An empty password: an encrypted key fails here instead of prompting on the terminal.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise CLIError(
            f"cannot serve TLS with {cert} and {key}: {exc.reason or exc}; both must be PEM, "
            "the key the certificate's own and not password-protected"
        ) from None
    return cert, key
