"""Start-up pieces of auth: the key pepper, the first admin key, the no-auth safety check.

Example::

    pepper = load_pepper(settings)
    check_dev_no_auth(settings)  # raises when auth is off on a public bind
    announce_admin_key(auth.bootstrap_admin_key(None, caller=SYSTEM), settings)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import TextIO

from openmaas.auth.keys import MIN_PEPPER_BYTES
from openmaas.settings import Settings

PEPPER_FILE = Path("secrets") / "pepper"
# Where a generated admin key goes when the server's output is not a terminal.
ADMIN_KEY_FILE = Path("secrets") / "admin-key"
PEPPER_BYTES = 32

log = logging.getLogger(__name__)


def load_pepper(settings: Settings) -> bytes:
    """OPENMAAS_KEY_PEPPER, else the pepper file in the home, created (0600) on first use."""
    if settings.key_pepper is not None:
        pepper = settings.key_pepper.get_secret_value().encode()
        if len(pepper) < MIN_PEPPER_BYTES:
            raise ValueError(f"OPENMAAS_KEY_PEPPER must be at least {MIN_PEPPER_BYTES} bytes")
        return pepper
    path = settings.home / PEPPER_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: two servers starting together on one home agree on the first one's pepper.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(PEPPER_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    pepper = path.read_bytes()
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"{path} is damaged: a pepper is at least {MIN_PEPPER_BYTES} bytes")
    return pepper


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_dev_no_auth(settings: Settings) -> None:
    """Refuse to run without authentication anywhere but on a loopback address."""
    if settings.dev_no_auth and not is_loopback(settings.host):
        raise ValueError(
            f"OPENMAAS_DEV_NO_AUTH is for development on a loopback address; refusing to serve "
            f"without API keys on {settings.host!r}. Bind to 127.0.0.1 or turn it off."
        )


def warn_dev_no_auth(out: TextIO = sys.stderr) -> None:
    out.write(
        "\n"
        "!!! WARNING: authentication is OFF (OPENMAAS_DEV_NO_AUTH). Every caller is an admin.\n"
        "!!! Use this for local development only.\n\n"
    )
    out.flush()


def announce_admin_key(plaintext: str | None, settings: Settings, out: TextIO = sys.stderr) -> None:
    """Hand a newly generated admin key over once: on a terminal, print it with how to use it;
    otherwise write it to a 0600 file in the home and log only where it is.

    Never to a log stream: a server's output that is not a terminal is a log file or a log
    collector, which ships and keeps what it is given (audit finding: the key went there).
    """
    if plaintext is None:
        return
    if _is_terminal(out):
        url = f"http://{settings.host}:{settings.port}"
        out.write(
            "\n"
            "OpenMaaS created the first admin key. It is shown only this once: save it now.\n\n"
            f"    {plaintext}\n\n"
            "Use it with:\n"
            f"    export OPENMAAS_API_KEY={plaintext}\n"
            f'    curl -H "Authorization: Bearer $OPENMAAS_API_KEY" {url}/v1/models\n'
            "    openmaas keys create my-app --scope inference   # a narrower key for an app\n\n"
        )
        out.flush()
        return
    path = write_admin_key_file(plaintext, settings)
    log.warning(
        "created the first admin key and wrote it to %s (readable by this user only); "
        "export it as OPENMAAS_API_KEY, then delete the file",
        path,
    )


def write_admin_key_file(plaintext: str, settings: Settings) -> Path:
    """Write the key to `$OPENMAAS_HOME/secrets/admin-key`, mode 0600, replacing an older one."""
    path = settings.home / ADMIN_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # The mode of os.open applies only to a new file: an older one keeps its own otherwise.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(plaintext + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or detached stream
        return False
