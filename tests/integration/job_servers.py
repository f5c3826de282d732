"""A test server that runs jobs (one worker, quick heartbeats, one torch thread), and the CLI
and documentation shell blocks run against a test server as a user would run them.

Example::

    server = start_job_server(tmp_path_factory, "optimization")
    result = run_cli(server, "optimize", "list")
    ran = run_script(server, docs_block, cwd=tmp_path)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.integration.conftest import RunningServer, start_server

ROOT = Path(__file__).resolve().parents[2]
# What the server passes to its job worker so that `tests` is importable there too.
PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
JOB_WORKER_ENV = {
    "OPENMAAS_WORKERS": "1",
    "OPENMAAS_JOB_HEARTBEAT_S": "0.5",
    # Fewer than the machine's cores: optimization jobs measure both engines on these.
    "OPENMAAS_TRAINING_THREADS": "1",
    "PYTHONPATH": PYTHONPATH,
}


def start_job_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, extra: Mapping[str, str] | None = None
) -> RunningServer:
    return start_server(tmp_path_factory.mktemp(name) / "home", {**JOB_WORKER_ENV, **(extra or {})})


def cli_env(server: RunningServer) -> dict[str, str]:
    """A user's environment for the CLI: the server's URL and key, `openmaas` on PATH."""
    return {
        **os.environ,
        "OPENMAAS_URL": server.url,
        "OPENMAAS_API_KEY": server.key,
        "PYTHONPATH": PYTHONPATH,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def run_cli(
    server: RunningServer, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openmaas.cli.main", *args],
        env=cli_env(server),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_script(server: RunningServer, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A shell block of the docs, run by bash as written (errors stop it)."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=cli_env(server),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of `language` in a Markdown text."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)
