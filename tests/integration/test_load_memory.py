"""Load memory is estimated from what a model's config declares, not from its upload size,
against a real server over real HTTP.

The attack: a transformers folder of a few KiB whose `config.json` declares a 200-layer,
65,536-wide network. `from_pretrained` would allocate every declared tensor (initialising the
missing weights), terabytes; the server refuses it before loading, and its memory stays put.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from openmaas import APIError, Client
from tests.integration import authed
from tests.integration.conftest import (
    RunningServer,
    assert_api_error,
    start_server,
    stop_server,
)
from tests.runtimes.tiny_models import build_bert

pytestmark = pytest.mark.integration

BUDGET_MB = 1024
HUGE = {
    "hidden_size": 65_536,
    "num_hidden_layers": 200,
    "num_attention_heads": 64,
    "intermediate_size": 262_144,
}


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("budget") / "home", {"OPENMAAS_MEMORY_BUDGET_MB": str(BUDGET_MB)}
    )
    yield running
    stop_server(running)


def declaring(directory: Path, **config: int) -> Path:
    """A tiny BERT whose config declares `config` and whose weights file holds one tensor."""
    build_bert(directory)
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    (directory / "model.safetensors").unlink()
    save_file({"pooler.dense.bias": torch.zeros(4)}, str(directory / "model.safetensors"))
    return directory


def resident_mib(server: RunningServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def embed(server: RunningServer, model: str) -> tuple[int, dict[str, str]]:
    response = authed.post(
        f"{server.url}/v1/embeddings", json={"model": model, "input": ["hello"]}, timeout=120
    )
    return response.status_code, response.json().get("error") or {}


@pytest.fixture(scope="module")
def warm(budget_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small model served once, so torch and transformers are imported before memory is
    measured: the figures then show what a refused load costs, not the libraries."""
    directory = build_bert(tmp_path_factory.mktemp("fits") / "fits")
    with Client(budget_server.url, api_key=budget_server.key) as sdk:
        sdk.upload("fits", directory, task="embedding")
    response = authed.post(
        f"{budget_server.url}/v1/embeddings",
        json={"model": "fits", "input": ["hello"]},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 32
    return "fits"


def test_a_small_upload_declaring_a_huge_network_is_refused_at_registration(
    budget_server: RunningServer, warm: str, tmp_path: Path
) -> None:
    model = declaring(tmp_path / "huge", **HUGE)
    assert sum(p.stat().st_size for p in model.iterdir()) < 1 << 20
    before = resident_mib(budget_server)
    started = time.monotonic()
    with Client(budget_server.url, api_key=budget_server.key) as sdk:
        with pytest.raises(APIError) as refused:
            sdk.upload("declares-huge", model, task="embedding")
        assert_api_error(refused, 507, "model_too_large")
        assert "declares-huge" in refused.value.message
        assert f"budget of {BUDGET_MB} MiB" in refused.value.message
        assert time.monotonic() - started < 30  # a meta build, never the allocation
        # The declared network is about 46,000 GiB; what grows is the meta build's modules.
        assert resident_mib(budget_server) - before < 200
        assert "declares-huge" not in {m.name for m in sdk.list_models()}
    status, _ = embed(budget_server, warm)
    assert status == 200


def test_a_config_declaring_absurdly_many_layers_is_refused_without_building_it(
    budget_server: RunningServer, warm: str, tmp_path: Path
) -> None:
    model = declaring(tmp_path / "deep", num_hidden_layers=10_000_000)
    before = resident_mib(budget_server)
    with (
        Client(budget_server.url, api_key=budget_server.key) as sdk,
        pytest.raises(APIError) as refused,
    ):
        sdk.upload("declares-deep", model, task="embedding")
    assert_api_error(refused, 507, "model_too_large")
    assert "num_hidden_layers=10000000" in refused.value.message
    assert resident_mib(budget_server) - before < 50


def test_a_model_over_a_lowered_budget_is_refused_at_load(tmp_path: Path) -> None:
    """Registered under a budget it fits, then served by a server with a smaller one: the
    load refuses it from its estimate, before allocating anything."""
    home = tmp_path / "home"
    model = declaring(tmp_path / "huge", **HUGE)
    roomy = start_server(home, {"OPENMAAS_MEMORY_BUDGET_MB": str(1 << 27)})  # 128 TiB
    try:
        with Client(roomy.url, api_key=roomy.key) as sdk:
            sdk.upload("declares-huge", model, task="embedding")
    finally:
        stop_server(roomy)
    server = start_server(home, {"OPENMAAS_MEMORY_BUDGET_MB": str(BUDGET_MB)})
    try:
        assert embed(server, "all-models-warm-up-nothing")[0] == 404
        before = resident_mib(server)
        status, error = embed(server, "declares-huge")
        assert (status, error["code"]) == (507, "model_too_large"), error
        assert "declares-huge:1" in error["message"]
        assert f"budget of {BUDGET_MB} MiB" in error["message"]
        # torch and transformers are imported for the estimate; the network never is built
        assert resident_mib(server) - before < 600
        assert embed(server, "declares-huge")[0] == 507  # the same answer, again
    finally:
        stop_server(server)
