"""A server on the default, relative home (`./.openmaas` under its working directory) serves
the catalog's rules models. VADER joins a relative lexicon path onto its own package folder, so
with a relative home `vader` answered 503 `model_load_failed` on a first start (issue 17);
every other test gives its server an absolute home."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import start_server, stop_server


def test_a_server_on_a_relative_home_classifies_with_vader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the server inherits it, as from a shell in a fresh clone
    server = start_server(Path(".openmaas"), {"OPENMAAS_CATALOG_AUTOREGISTER": "true"})
    try:
        response = httpx.post(
            f"{server.url}/v1/classify",
            json={"model": "vader", "input": ["I love this!", "This is awful."]},
            headers=server.headers,
            timeout=60,
        )
    finally:
        stop_server(server)
    assert response.status_code == 200, response.text
    assert [item["label"] for item in response.json()["data"]] == ["positive", "negative"]
    assert (tmp_path / ".openmaas" / "openmaas.db").is_file()
