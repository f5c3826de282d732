"""`make serve` binds where the README says: `HOST=…` and `PORT=…` on make's command line, else
OPENMAAS_HOST and OPENMAAS_PORT (it always passed `--port 8000`, so OPENMAAS_PORT did nothing).
`make -n` prints the commands without running any of them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def serve_command(*arguments: str, **env: str) -> str:
    """The `openmaas serve` line `make serve` would run."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in ("HOST", "PORT", "MAKEFLAGS") and not name.startswith("OPENMAAS_")
    }
    made = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "serve", *arguments],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = [line for line in made.stdout.splitlines() if "openmaas serve" in line]
    return line.strip()


def test_make_serve_leaves_the_address_to_the_settings() -> None:
    assert serve_command().endswith("/openmaas serve")
    assert serve_command(OPENMAAS_PORT="9001").endswith("/openmaas serve")


def test_make_serve_passes_host_and_port_when_given() -> None:
    assert serve_command("PORT=9001").endswith("/openmaas serve --port 9001")
    both = serve_command("HOST=0.0.0.0", "PORT=9001")
    assert both.endswith("/openmaas serve --host 0.0.0.0 --port 9001")
