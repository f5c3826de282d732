"""The README's examples, executed as written against a real server on its first start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import RunningServer, start_server, stop_server

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(title: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(section(title)) if lang == language]


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on a fresh home with the catalog registered, as `make serve` starts it."""
    home = tmp_path_factory.mktemp("readme") / "home"
    server = start_server(home, {"OPENMAAS_CATALOG_AUTOREGISTER": "true"})
    yield server
    stop_server(server)


def test_quickstart_commands_run_as_written(first_start: RunningServer) -> None:
    commands = blocks("Quickstart (5 minutes)", "bash")
    assert len(commands) == 3
    env = {
        **os.environ,
        "OPENMAAS_URL": first_start.url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
    }
    for block in commands:
        # The virtualenv is already active for the test run.
        script = block.replace("source .venv/bin/activate\n", "")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{script}\n---\n{result.stdout}\n{result.stderr}"

    models = httpx.get(f"{first_start.url}/v1/registry/models").json()["data"]
    names = {m["name"] for m in models}
    assert {
        "all-minilm-l6-v2",
        "en-core-web-sm",
        "whisper-tiny-en",
        "vader",
        "langid",
        "textrank",
        "intent-clinc150",
        "my-embedder",
    } <= names
    resolve = f"{first_start.url}/v1/registry/resolve"
    assert httpx.get(resolve, params={"ref": "my-embedder"}).json()["version"] == 1
    assert httpx.get(resolve, params={"ref": "my-embedder@latest"}).json()["version"] == 2
    history = httpx.get(f"{first_start.url}/v1/registry/models/my-embedder/aliases/history")
    assert [e["action"] for e in history.json()["data"]] == ["set", "move", "rollback"]


def test_sdk_example_runs_as_written(first_start: RunningServer) -> None:
    (example,) = blocks("Python SDK", "python")
    script = example.replace("http://127.0.0.1:8000", first_start.url)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sdk-embedder:1 embedding transformers")
    assert lines[1:] == ["1", "404 alias_not_found"]


def test_error_example_matches_the_server(first_start: RunningServer) -> None:
    (example,) = blocks("HTTP API", "json")
    response = httpx.get(f"{first_start.url}/v1/registry/models/bert")
    assert response.status_code == 404
    assert response.json() == json.loads(example)
