"""What an attacker would try, against a real server: each refused with the right status.

Keys: missing, malformed, unknown, wrong secret, revoked, expired; scopes for every route
group; key material never echoed; the no-auth development setting on a public bind; header
injection through model names; the first-start admin key.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from safetensors.numpy import save_file

from openmaas import APIError, Client
from openmaas.auth.keys import generate_key, parse_key
from tests.factories import write_hf_model
from tests.integration.conftest import (
    GENERATED_KEY_FILE,
    RunningServer,
    free_port,
    start_server,
    stop_server,
)
from tests.runtimes.tiny_models import build_bert

OPENMAAS = Path(sys.executable).parent / "openmaas"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with keys on (the default) and the catalog's rule models registered."""
    running = start_server(
        tmp_path_factory.mktemp("security") / "home", {"OPENMAAS_CATALOG_AUTOREGISTER": "true"}
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def admin(guarded: RunningServer) -> Iterator[Client]:
    with Client(guarded.url, api_key=guarded.key) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(admin: Client, *scopes: str, **options: Any) -> str:
    return admin.create_key(
        f"test-{'-'.join(scopes)}-{time.monotonic_ns()}", list(scopes), **options
    ).key


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert response.headers["x-request-id"]
    return error


# -- authentication --------------------------------------------------------------------------


def test_requests_without_a_usable_key_are_refused(guarded: RunningServer) -> None:
    url = f"{guarded.url}/v1/models"
    real = parse_key(guarded.key)
    unknown = generate_key().plaintext
    wrong_secret = f"om-{real.prefix}_{generate_key().secret}"
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "invalid_api_key"),
        ({"Authorization": f"Basic {guarded.key}"}, "invalid_api_key"),
        ({"Authorization": "Bearer om-short"}, "invalid_api_key"),
        ({"Authorization": "Bearer sk-" + "a" * 48}, "invalid_api_key"),
        (bearer(unknown), "invalid_api_key"),
        (bearer(wrong_secret), "invalid_api_key"),
        ({"X-API-Key": unknown}, "invalid_api_key"),
    ]
    messages = {}
    for headers, code in cases:
        response = httpx.get(url, headers=headers)
        error = assert_refused(response, 401, code)
        assert error["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer"
        assert real.secret not in response.text
        messages[headers.get("Authorization") or headers.get("X-API-Key", "")] = error["message"]
    # An unknown prefix and a wrong secret for a real prefix are indistinguishable.
    assert messages[f"Bearer {unknown}"] == messages[f"Bearer {wrong_secret}"]


def test_a_key_works_as_bearer_and_as_x_api_key(guarded: RunningServer) -> None:
    for headers in (bearer(guarded.key), {"X-API-Key": guarded.key}):
        response = httpx.get(f"{guarded.url}/v1/models", headers=headers)
        assert response.status_code == 200, response.text


def test_the_openai_client_authenticates_with_its_api_key(guarded: RunningServer) -> None:
    with openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=guarded.key, max_retries=0) as ok:
        assert "vader" in {model.id for model in ok.models.list()}
    bad = generate_key().plaintext
    with (
        openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=bad, max_retries=0) as refused,
        pytest.raises(openai.AuthenticationError) as exc,
    ):
        refused.models.list()
    assert exc.value.code == "invalid_api_key"


def test_a_revoked_key_is_refused_on_its_next_request(
    guarded: RunningServer, admin: Client
) -> None:
    created = admin.create_key("to-revoke", ["inference"])
    url = f"{guarded.url}/v1/models"
    assert httpx.get(url, headers=bearer(created.key)).status_code == 200
    revoked = admin.revoke_key(created.id)
    assert revoked.revoked_at is not None
    assert_refused(httpx.get(url, headers=bearer(created.key)), 401, "api_key_revoked")
    # Revoking again is harmless and keeps the first revocation.
    assert admin.revoke_key(created.id).revoked_at == revoked.revoked_at


def test_an_expired_key_is_refused(guarded: RunningServer, admin: Client) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    created = admin.create_key("short-lived", ["inference"], expires_at=expires)
    url = f"{guarded.url}/v1/models"
    assert httpx.get(url, headers=bearer(created.key)).status_code == 200
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    assert_refused(httpx.get(url, headers=bearer(created.key)), 401, "api_key_expired")


def test_expiry_in_the_past_is_a_400(admin: Client) -> None:
    with pytest.raises(APIError) as exc:
        admin.create_key("stale", ["inference"], expires_at=datetime.now(UTC) - timedelta(1))
    assert exc.value.status_code == 400


def test_health_is_open_and_metrics_need_admin(guarded: RunningServer, admin: Client) -> None:
    for path in ("/livez", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{guarded.url}{path}").status_code == 200, path
    assert_refused(httpx.get(f"{guarded.url}/metrics"), 401, "missing_api_key")
    inference = new_key(admin, "inference")
    # Server metadata is no probe: it takes a key, of any scope.
    assert httpx.get(f"{guarded.url}/v2").status_code == 401
    for key in (inference, new_key(admin, "training")):
        assert httpx.get(f"{guarded.url}/v2", headers=bearer(key)).status_code == 200
    metrics = f"{guarded.url}/metrics"
    assert_refused(httpx.get(metrics, headers=bearer(inference)), 403, "insufficient_scope")
    assert httpx.get(metrics, headers=bearer(guarded.key)).status_code == 200


# -- scopes ----------------------------------------------------------------------------------

# (method, path, body, the scopes that may call it)
ROUTES: list[tuple[str, str, dict[str, Any] | None, set[str]]] = [
    ("GET", "/v1/models", None, {"inference", "models:read"}),
    ("POST", "/v1/embeddings", {"model": "vader", "input": "x"}, {"inference"}),
    ("POST", "/v1/classify", {"model": "vader", "input": "good"}, {"inference"}),
    ("POST", "/v1/moderations", {"model": "vader", "input": "x"}, {"inference"}),
    ("POST", "/v1/chat/completions", {"model": "vader", "messages": []}, {"inference"}),
    ("POST", "/v2/models/vader/infer", {"inputs": []}, {"inference"}),
    ("GET", "/v2/models/vader", None, {"inference", "models:read"}),
    ("POST", "/v2/repository/index", {}, {"inference", "models:read"}),
    # A private model of the keys' own project (`default`): the catalog is public, and a
    # public model is read-only to every non-admin key (see test_tenancy.py).
    ("POST", "/v2/repository/models/scope-own/unload", {}, {"models:write"}),
    ("GET", "/v1/registry/models", None, {"models:read"}),
    ("GET", "/v1/catalog", None, {"models:read"}),
    ("POST", "/v1/catalog/no-such-entry/register", None, set()),  # catalog models are public
    ("PATCH", "/v1/registry/models/scope-own", {"description": "x"}, {"models:write"}),
    # Fine-tuning files need the training scope, batch files the inference scope.
    ("GET", "/v1/files", None, {"training", "inference"}),
    ("GET", "/v1/batches", None, {"inference"}),
    ("GET", "/v1/datasets", None, {"training"}),
    ("GET", "/v1/fine_tuning/jobs", None, {"training"}),
    ("GET", "/v1/training/jobs", None, {"training"}),
    ("GET", "/v1/optimization/jobs", None, {"training"}),
    ("GET", "/v1/evaluations", None, {"training"}),
    ("GET", "/v1/keys", None, set()),
    ("POST", "/v1/projects", {"name": "scope-test"}, set()),
    ("GET", "/metrics", None, set()),
]
SCOPES = ("inference", "models:read", "models:write", "training")


@pytest.fixture(scope="module")
def scope_own(admin: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private model of project `default`, changeable by its models:write keys."""
    admin.upload("scope-own", write_hf_model(tmp_path_factory.mktemp("scope") / "m"))
    return "scope-own"


@pytest.mark.usefixtures("scope_own")
def test_every_route_group_checks_its_scope(guarded: RunningServer, admin: Client) -> None:
    keys = {scope: new_key(admin, scope) for scope in SCOPES}
    for method, path, body, allowed in ROUTES:
        for scope, key in keys.items():
            response = httpx.request(method, f"{guarded.url}{path}", json=body, headers=bearer(key))
            if scope in allowed:
                assert response.status_code not in (401, 403), (method, path, scope)
            elif path.startswith("/v2/"):  # the Open Inference Protocol's error shape
                assert response.status_code == 403, (method, path, scope)
                assert "scope" in response.json()["error"]
            else:
                error = assert_refused(response, 403, "insufficient_scope")
                assert error["type"] == "permission_error", (method, path, scope)


@pytest.mark.usefixtures("scope_own")
def test_an_admin_key_can_do_everything(guarded: RunningServer) -> None:
    for method, path, body, _ in ROUTES:
        if path.endswith("/unload") or (method == "POST" and path == "/v1/projects"):
            continue  # changes shared state; covered elsewhere
        response = httpx.request(
            method, f"{guarded.url}{path}", json=body, headers=bearer(guarded.key)
        )
        assert response.status_code not in (401, 403), (method, path)


# -- key material ----------------------------------------------------------------------------


def test_key_secrets_appear_once_and_never_again(guarded: RunningServer, admin: Client) -> None:
    created = admin.create_key("shown-once", ["inference"])
    secret = parse_key(created.key).secret
    listed = httpx.get(f"{guarded.url}/v1/keys", headers=bearer(guarded.key)).text
    single = httpx.get(f"{guarded.url}/v1/keys/{created.id}", headers=bearer(guarded.key)).text
    for body in (listed, single):
        assert secret not in body
        for leak in ('"key"', "hash", "salt"):
            assert leak not in body
    assert created.prefix in listed


def test_whoami_names_the_project_and_scopes(guarded: RunningServer, admin: Client) -> None:
    key = new_key(admin, "models:read")
    with Client(guarded.url, api_key=key) as client:
        me = client.whoami()
    assert (me.project, me.scopes) == ("default", ["models:read"])
    assert key.startswith(me.prefix + "_")


# -- header injection ------------------------------------------------------------------------


def test_model_names_cannot_inject_headers(guarded: RunningServer) -> None:
    evil = "vader\r\nSet-Cookie: session=stolen"
    response = httpx.post(
        f"{guarded.url}/v1/classify",
        json={"model": evil, "input": "x"},
        headers=bearer(guarded.key),
    )
    assert response.status_code in (400, 404)
    assert "set-cookie" not in response.headers
    encoded = httpx.get(
        f"{guarded.url}/v2/models/vader%0d%0aSet-Cookie:%20a=b", headers=bearer(guarded.key)
    )
    assert encoded.status_code in (400, 404)
    assert "set-cookie" not in encoded.headers


# -- bootstrap and the no-auth setting -------------------------------------------------------


def test_first_start_hands_over_an_admin_key_once_never_in_the_log(tmp_path: Path) -> None:
    """Output to a file (not a terminal): the key goes to a 0600 file, the log names the file
    and holds no key."""
    home = tmp_path / "home"
    first = start_server(home, admin_key=None)
    key_file = home / GENERATED_KEY_FILE
    try:
        assert first.key.startswith("om-")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
        with Client(first.url, api_key=first.key) as client:
            assert client.whoami().scopes == ["admin"]
    finally:
        stop_server(first)
    log = first.log.read_text()
    assert first.key not in log
    assert first.key.split("_")[0] not in log  # not even its prefix
    assert str(key_file) in log, log
    key_file.unlink()  # as the log tells the operator to, once the key is saved
    again = start_server(home, admin_key=None)
    try:
        assert again.key == ""  # keys exist: nothing new is generated
        assert not key_file.exists()
        with Client(again.url, api_key=first.key) as client:
            assert client.whoami().project == "default"
    finally:
        stop_server(again)


def test_no_auth_is_refused_on_a_public_address(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OPENMAAS_HOME": str(tmp_path / "home"),
        "OPENMAAS_DEV_NO_AUTH": "true",
        "OPENMAAS_CATALOG_AUTOREGISTER": "false",
    }
    result = subprocess.run(
        [str(OPENMAAS), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "OPENMAAS_DEV_NO_AUTH" in result.stderr
    assert "0.0.0.0" in result.stderr


def test_no_auth_on_loopback_warns_and_lets_requests_in(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", {"OPENMAAS_DEV_NO_AUTH": "true"})
    try:
        assert httpx.get(f"{server.url}/v1/keys").status_code == 200
        assert "authentication is OFF" in server.log.read_text()
    finally:
        stop_server(server)


# -- tenants ---------------------------------------------------------------------------------


def test_projects_see_only_their_own_models_and_the_public_ones(
    guarded: RunningServer, admin: Client, tmp_path: Path
) -> None:
    for name in ("tenant-a", "tenant-b"):
        admin.create_project(name)
    scopes = ["inference", "models:read", "models:write"]
    key_a = admin.create_key("a", scopes, project="tenant-a").key
    key_b = admin.create_key("b", scopes, project="tenant-b").key
    with Client(guarded.url, api_key=key_a) as tenant_a:
        tenant_a.upload("a-secret", build_bert(tmp_path / "bert"))
    url, as_b = guarded.url, bearer(key_b)

    def as_missing(path: str, method: str = "GET", **kwargs: Any) -> None:
        """B's answer for A's model equals its answer for a model that never existed."""
        hidden = httpx.request(method, f"{url}{path}", headers=as_b, **kwargs)
        absent = httpx.request(
            method, f"{url}{path.replace('a-secret', 'no-such')}", headers=as_b, **kwargs
        )
        assert hidden.status_code == absent.status_code == 404, (path, hidden.text)
        assert hidden.text.replace("a-secret", "no-such") == absent.text, path

    as_missing("/v1/registry/models/a-secret")
    as_missing("/v1/registry/models/a-secret/versions/1")
    as_missing("/v1/registry/models/a-secret/aliases")
    as_missing("/v1/registry/models/a-secret", "PATCH", json={"description": "mine now"})
    as_missing("/v1/registry/models/a-secret", "DELETE")
    as_missing("/v1/models/a-secret")
    as_missing("/v2/models/a-secret")
    hidden = httpx.post(
        f"{url}/v1/embeddings", json={"model": "a-secret", "input": "x"}, headers=as_b
    )
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "model_not_found")
    resolve = httpx.get(f"{url}/v1/registry/resolve", params={"ref": "a-secret"}, headers=as_b)
    assert resolve.status_code == 404
    for path in ("/v1/registry/models", "/v1/models"):
        names = {
            m.get("name") or m.get("id")
            for m in httpx.get(f"{url}{path}", headers=as_b).json()["data"]
        }
        assert "a-secret" not in names, path
        assert "vader" in names, path  # the catalog is public
    # (Registering the same name makes B's own model: test_tenancy.py.)
    # The owner and admins see it; A's embeddings work.
    as_a = bearer(key_a)
    own = httpx.post(
        f"{url}/v1/embeddings", json={"model": "a-secret", "input": "x"}, headers=as_a, timeout=60
    )
    assert own.status_code == 200, own.text
    assert (
        httpx.get(f"{url}/v1/registry/models/a-secret", headers=bearer(guarded.key)).status_code
        == 200
    )
    # B may call the public catalog but not change it.
    assert (
        httpx.post(
            f"{url}/v1/classify", json={"model": "vader", "input": "ok"}, headers=as_b
        ).status_code
        == 200
    )
    edit = httpx.patch(f"{url}/v1/registry/models/vader", json={"description": "x"}, headers=as_b)
    assert (edit.status_code, edit.json()["error"]["code"]) == (403, "read_only_model")
    unload = httpx.post(f"{url}/v2/repository/models/vader/unload", json={}, headers=as_b)
    assert unload.status_code == 403
    # B's usage is its own; A's usage is 'not found' to B.
    usage = httpx.get(f"{url}/v1/usage", params={"project": "tenant-a"}, headers=as_b)
    assert usage.status_code == 404
    # An admin marks the model public: now B sees and calls it.
    marked = httpx.put(
        f"{url}/v1/registry/models/a-secret/public",
        json={"public": True},
        headers=bearer(guarded.key),
    )
    assert marked.status_code == 200, marked.text
    shared = httpx.post(
        f"{url}/v1/embeddings", json={"model": "a-secret", "input": "x"}, headers=as_b
    )
    assert shared.status_code == 200, shared.text


def embedding_head(directory: Path, encoder: str, dim: int = 32) -> Path:
    """A linear-head version over `encoder` whose identity weights would echo, as scores,
    every dimension of the encoder's embedding of a text."""
    directory.mkdir(parents=True)
    eye = np.eye(dim, dtype=np.float32)
    save_file({"weight": eye, "bias": np.zeros(dim, np.float32)}, directory / "weights.safetensors")
    labels = {"labels": [f"d{i}" for i in range(dim)]}
    (directory / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    spec = {
        "task": "text-classification",
        "runtime": "linear-head",
        "format": "safetensors",
        "encoder": encoder,
        "pooling": "mean",
        "normalize": None,
    }
    (directory / "openmaas.json").write_text(json.dumps(spec), encoding="utf-8")
    return directory


def test_a_head_cannot_read_another_projects_private_encoder(
    guarded: RunningServer, admin: Client, tmp_path: Path
) -> None:
    for name in ("tenant-c", "tenant-d"):
        admin.create_project(name)
    scopes = ["inference", "models:read", "models:write"]
    key_c = admin.create_key("c", scopes, project="tenant-c").key
    key_d = admin.create_key("d", scopes, project="tenant-d").key
    with Client(guarded.url, api_key=key_c) as tenant_c:
        tenant_c.upload("c-encoder", build_bert(tmp_path / "bert"))
        tenant_c.upload("c-head", embedding_head(tmp_path / "own", "c-encoder"))
    with Client(guarded.url, api_key=key_d) as tenant_d:
        tenant_d.upload("d-reads-c", embedding_head(tmp_path / "theirs", "c-encoder"))
        tenant_d.upload("d-dangling", embedding_head(tmp_path / "none", "no-such-encoder"))

    def classify(model: str, key: str) -> httpx.Response:
        return httpx.post(
            f"{guarded.url}/v1/classify",
            json={"model": model, "input": "a secret sentence"},
            headers=bearer(key),
            timeout=60,
        )

    # D's head over C's private encoder fails exactly as one over an encoder that never was.
    hidden, absent = classify("d-reads-c", key_d), classify("d-dangling", key_d)
    # (A model that cannot load is a 503 naming it and the cause.)
    assert hidden.status_code == absent.status_code == 503, hidden.text
    assert hidden.json()["error"]["message"].endswith("model 'c-encoder' not found")
    renamed = hidden.text.replace("d-reads-c", "d-dangling").replace("c-encoder", "no-such-encoder")
    assert renamed == absent.text
    # A head over its own project's encoder, and over a public one, loads.
    own = classify("c-head", key_c)
    assert own.status_code == 200, own.text
    assert len(own.json()["data"][0]["labels"]) == 32
    marked = httpx.put(
        f"{guarded.url}/v1/registry/models/c-encoder/public",
        json={"public": True},
        headers=bearer(guarded.key),
    )
    assert marked.status_code == 200, marked.text
    assert classify("d-reads-c", key_d).status_code == 200


def test_server_paths_need_an_admin_key(
    guarded: RunningServer, admin: Client, tmp_path: Path
) -> None:
    key = new_key(admin, "models:write")
    response = httpx.post(
        f"{guarded.url}/v1/registry/models/from-disk/versions",
        json={"source": {"type": "path", "path": str(build_bert(tmp_path / "bert"))}},
        headers=bearer(key),
    )
    assert (response.status_code, response.json()["error"]["code"]) == (403, "insufficient_scope")
