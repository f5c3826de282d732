"""The Python SDK against a real server: integrity checks, unsafe uploads, error shapes.

One server serves the whole module; every test registers its own model names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import stat
import tarfile
from pathlib import Path

import httpx
import pytest

from openmaas import APIError, Client
from openmaas.client import ConnectionFailed
from tests.factories import write_hf_model
from tests.integration import authed
from tests.integration.conftest import (
    RunningServer,
    assert_api_error,
    free_port,
    start_server,
    stop_server,
)

ERROR_FIELDS = {"message", "type", "param", "code"}


def stored_file(home: Path, sha256: str, name: str) -> Path:
    """The file with this hash in the artifact store (published objects are read-only)."""
    for candidate in (home / "artifacts" / "objects").glob(f"*/{name}"):
        if hashlib.sha256(candidate.read_bytes()).hexdigest() == sha256:
            return candidate
    raise AssertionError(f"{name} with sha256 {sha256} not found in the store")


def test_verify_detects_tampering(
    sdk: Client, shared_server: RunningServer, tmp_path: Path
) -> None:
    version = sdk.upload("tampered", write_hf_model(tmp_path / "t", seed=42))
    report = sdk.verify("tampered", version.version)
    assert (report.ok, report.files_checked, report.problems) == (True, 4, [])

    weights = next(f for f in version.files if f.path == "model.safetensors")
    target = stored_file(shared_server.home, weights.sha256, "model.safetensors")
    target.chmod(target.stat().st_mode | stat.S_IWUSR)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only the hash can tell
    target.write_bytes(bytes(data))

    report = sdk.verify("tampered", version.version)
    assert not report.ok
    assert [(p.path, p.problem) for p in report.problems] == [
        ("model.safetensors", "hash_mismatch")
    ]


def test_pickle_upload_is_refused(sdk: Client, tmp_path: Path) -> None:
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    with pytest.raises(APIError) as refused:
        sdk.upload("pickled", model_dir)
    assert_api_error(refused, 400, "unsafe_artifact")
    assert "pytorch_model.bin" in refused.value.message
    assert "OPENMAAS_ALLOW_PICKLE" in refused.value.message
    with pytest.raises(APIError) as absent:
        sdk.get_model("pickled")
    assert_api_error(absent, 404, "model_not_found")


def _tar_with(target: Path, member: tarfile.TarInfo, data: bytes | None = None) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        good = tarfile.TarInfo("model/config.json")
        config = b'{"architectures": ["BertModel"]}'
        good.size = len(config)
        archive.addfile(good, io.BytesIO(config))
        archive.addfile(member, io.BytesIO(data) if data is not None else None)
    return target


def test_escaping_archives_are_refused(sdk: Client, tmp_path: Path) -> None:
    escape = tarfile.TarInfo("model/../../evil.txt")
    escape.size = 4
    link = tarfile.TarInfo("model/link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archives = {
        "dotdot": _tar_with(tmp_path / "dotdot.tar.gz", escape, b"evil"),
        "symlink": _tar_with(tmp_path / "symlink.tar.gz", link),
    }
    for name, archive in archives.items():
        with pytest.raises(APIError) as refused:
            sdk.upload(f"escape-{name}", archive)
        assert_api_error(refused, 400, "unsafe_artifact")
    assert not any(m.name.startswith("escape-") for m in sdk.list_models())


def test_oversized_upload_is_refused(tmp_path: Path) -> None:
    small = start_server(tmp_path / "small-home", {"OPENMAAS_MAX_UPLOAD_MB": "1"})
    try:
        model_dir = write_hf_model(tmp_path / "big")
        # Random bytes do not compress, so the archive really is over 1 MiB.
        (model_dir / "extra.txt").write_bytes(os.urandom(2 * 1024 * 1024))
        with Client(small.url, api_key=small.key) as small_sdk, pytest.raises(APIError) as too_big:
            small_sdk.upload("big", model_dir)
        assert_api_error(too_big, 413, "payload_too_large")
        assert "OPENMAAS_MAX_UPLOAD_MB" in too_big.value.message
    finally:
        stop_server(small)


# -- error shape and transport -------------------------------------------------------------


def test_malformed_json_gets_the_error_shape(shared_server: RunningServer) -> None:
    url = f"{shared_server.url}/v1/registry/models/broken/versions"
    response = authed.post(
        url, content=b'{"source": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == ERROR_FIELDS
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["X-Request-Id"]

    upload = authed.post(
        f"{url}/upload",
        files={"file": ("m.tar.gz", b"not an archive", "application/gzip")},
        data={"metadata": "{not json"},
    )
    assert upload.status_code == 400
    assert upload.json()["error"]["param"] == "metadata"


def test_error_body_shape_and_request_id(sdk: Client, shared_server: RunningServer) -> None:
    response = authed.get(
        f"{shared_server.url}/v1/registry/models/missing", headers={"X-Request-Id": "trace-123"}
    )
    assert response.status_code == 404
    body = response.json()
    assert list(body) == ["error"]
    assert set(body["error"]) == ERROR_FIELDS
    assert (body["error"]["type"], body["error"]["code"]) == ("not_found_error", "model_not_found")
    assert response.headers["X-Request-Id"] == "trace-123"

    with pytest.raises(APIError) as exc:
        sdk.get_model("missing")
    error = exc.value
    assert (error.status_code, error.type, error.code, error.param) == (
        404,
        "not_found_error",
        "model_not_found",
        "model",
    )
    assert error.message == body["error"]["message"]
    assert error.request_id
    assert error.request_id != "trace-123"


def test_connection_failure_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as sdk, pytest.raises(ConnectionFailed) as exc:
        sdk.list_models()
    assert isinstance(exc.value, APIError)
    assert url in exc.value.message
    assert "may not be running" in exc.value.message


def test_api_key_is_sent_as_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(502, text="<html>bad gateway</html>")

    sdk = Client(
        "http://models.internal", api_key="sk-test", transport=httpx.MockTransport(handler)
    )
    with sdk, pytest.raises(APIError) as exc:
        sdk.list_models()
    assert seen[0].headers["Authorization"] == "Bearer sk-test"
    # A body that is not the server's error shape still gives a readable error.
    assert exc.value.status_code == 502
    assert exc.value.code is None
    assert "bad gateway" in exc.value.message
