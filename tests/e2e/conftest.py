"""Fixtures of the console's browser tests: one server and one Chromium per test module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from selenium import webdriver

from tests.e2e.browser import ROOT, open_browser, require_browser
from tests.integration.conftest import RunningServer, start_server, stop_server


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_browser()  # before the server starts: a missing browser fails fast
    running = start_server(
        tmp_path_factory.mktemp("console") / "home",
        {
            # Usage written within a fifth of a second: the usage page shows what was asked.
            "OPENMAAS_USAGE_FLUSH_S": "0.2",
            # One training worker, which knows the slowed recipe the training page runs.
            "OPENMAAS_WORKERS": "1",
            "OPENMAAS_EXTRA_RECIPES": "tests.integration.test_training_jobs:SlowTextCNN",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def browser(console_server: RunningServer) -> Iterator[webdriver.Chrome]:
    with open_browser() as opened:
        yield opened


def create_key(server: RunningServer, name: str, *scopes: str) -> tuple[int, str]:
    """A key of the default project (id, plaintext), made with the admin key."""
    response = httpx.post(
        f"{server.url}/v1/keys",
        json={"name": name, "scopes": list(scopes)},
        headers=server.headers,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body["key"]


def model_dir(root: Path) -> Path:
    """A servable model directory that registers in a fraction of a second (no torch): VADER's
    lexicon under the rules runtime, as the catalog lays it out."""
    import json

    import vaderSentiment

    root.mkdir(parents=True, exist_ok=True)
    package = Path(vaderSentiment.__file__).parent
    files = ["vader_lexicon.txt", "emoji_utf8_lexicon.txt"]
    for name in files:
        shutil.copy(package / name, root / name)
    manifest = {
        "task": "text-classification",
        "runtime": "rules",
        "format": "rules",
        "engine": "vader",
        "package": "vaderSentiment",
        "package_version": version("vaderSentiment"),
        "files": files,
    }
    (root / "openmaas.json").write_text(json.dumps(manifest))
    return root
