"""wiring.py builds the registry for whoever needs one (server, worker, admin CLI) from the
same settings, so they all open the same database and artifact store the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.errors import UnsafeArtifact
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.settings import Settings
from openmaas.wiring import Services, build_registry
from tests.factories import write_hf_model


def test_a_built_registry_shares_the_servers_store(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", catalog_autoregister=False, allow_pickle=True)
    services = Services.build(settings)
    services.start()
    try:
        registry = build_registry(settings)
        registry.start()
        model = write_hf_model(tmp_path / "m")
        registry.registration.register_plan(
            "m", plan_directory(model), VersionSpec(), caller=SYSTEM
        )
        assert services.registry.resolve("m", caller=SYSTEM).version == 1
        assert registry.artifacts.root == services.registry.artifacts.root
        assert registry.registration.allow_pickle
        registry.db.close()
    finally:
        services.close()


def test_a_worker_registry_refuses_pickles_whatever_the_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", allow_pickle=True)
    registry = build_registry(settings, allow_pickle=False)
    registry.db.migrate()
    registry.start()
    model = write_hf_model(tmp_path / "m")
    (model / "pytorch_model.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsafeArtifact):
        registry.registration.register_plan(
            "m", plan_directory(model), VersionSpec(), caller=SYSTEM
        )
    registry.db.close()
