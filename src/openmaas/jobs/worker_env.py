"""What a worker process inherits: the server's settings, never the secrets it does not need.

A training worker runs tenant-chosen recipes over tenant data; its environment can be read
by anything that runs inside it (`/proc/self/environ`, `os.environ`). It needs the database,
the artifact store and, when artifacts are encrypted at rest, the encryption key; it never
authenticates API keys, so the admin key and the key pepper are not passed at all. The
encryption key is handed over in a file (0600, under `$OPENMAAS_HOME/secrets`) named by
`OPENMAAS_ENCRYPTION_KEY_FILE`, not as the value of a variable.

Example::

    env = worker_environment(settings, os.environ)
    subprocess.Popen([sys.executable, "-m", "openmaas.jobs.worker", ...], env=env)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from openmaas.settings import Settings

# Variables a worker must never see (pydantic-settings matches names case-insensitively, so
# the comparison is too).
WITHHELD = frozenset({"OPENMAAS_ADMIN_KEY", "OPENMAAS_KEY_PEPPER", "OPENMAAS_ENCRYPTION_KEY"})
SECRETS_DIR = Path("secrets")
WORKER_KEY_FILE = SECRETS_DIR / "worker-encryption-key"


def worker_key_path(settings: Settings) -> Path:
    return settings.home / WORKER_KEY_FILE


def worker_environment(settings: Settings, inherited: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker process: `inherited` less every secret, plus the state
    locations of `settings` (the workers must see what this process sees, whatever set it)."""
    env = {name: value for name, value in inherited.items() if name.upper() not in WITHHELD}
    env.update(
        {
            "OPENMAAS_HOME": str(settings.home),
            "OPENMAAS_DATABASE_URL": settings.database_url,
            "OPENMAAS_ARTIFACTS_DIR": str(settings.artifact_root),
            "OPENMAAS_ARTIFACT_CACHE_DIR": str(settings.artifact_cache_root),
        }
    )
    if settings.artifacts_url is not None:
        env["OPENMAAS_ARTIFACTS_URL"] = settings.artifacts_url
    # The workers send their spans where this process sends its own, whatever set it.
    if settings.otel_endpoint:
        env["OPENMAAS_OTEL_ENDPOINT"] = settings.otel_endpoint
    if settings.otel_traces_endpoint:
        env["OPENMAAS_OTEL_TRACES_ENDPOINT"] = settings.otel_traces_endpoint
    key_file = _encryption_key_file(settings)
    if key_file is not None:
        env["OPENMAAS_ENCRYPTION_KEY_FILE"] = str(key_file)
    return env


def remove_worker_key(settings: Settings) -> None:
    """Delete the key file written for the workers (when the supervisor stops)."""
    with contextlib.suppress(FileNotFoundError):
        worker_key_path(settings).unlink()


def _encryption_key_file(settings: Settings) -> Path | None:
    if settings.encryption_key_file is not None:
        return settings.encryption_key_file
    if settings.encryption_key is None:
        return None
    path = worker_key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    # Created 0600 from the start (never readable by others, not even for a moment), then
    # renamed over the old one so a worker starting meanwhile reads a whole key.
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(settings.encryption_key.get_secret_value().strip() + "\n")
    os.replace(part, path)
    return path
