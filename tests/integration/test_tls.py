"""HTTPS: `openmaas serve --ssl-certfile/--ssl-keyfile` with a self-signed certificate made
here, called with the official `openai` client through an httpx client that trusts it."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from openmaas.auth.entities import SYSTEM
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from tests.conftest import build_registry
from tests.integration.conftest import ADMIN_KEY, STARTUP_TIMEOUT_S, free_port
from tests.runtimes.tiny_models import build_bert

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def trusting_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def self_signed(directory: Path, name: str = "openmaas-test") -> Certificate:
    """A certificate for 127.0.0.1 and localhost, its own issuer (so also its trust anchor)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Certificate(cert_path, key_path)


def serve_command(*options: str) -> list[str]:
    return [sys.executable, "-m", "openmaas.cli.main", "serve", *options]


def server_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPENMAAS_HOME": str(home),
        "OPENMAAS_CATALOG_AUTOREGISTER": "false",
        "OPENMAAS_LOG_LEVEL": "warning",
        "OPENMAAS_ADMIN_KEY": ADMIN_KEY,
    }


@dataclass(frozen=True)
class HttpsServer:
    url: str
    certificate: Certificate


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    root = tmp_path_factory.mktemp("tls")
    home = root / "home"
    # A model registered straight into the state directory before the server starts.
    registry = build_registry(f"sqlite:///{home / 'openmaas.db'}", home / "artifacts")
    model = build_bert(root / "tiny")
    registry.registration.register_plan(
        "tiny", plan_directory(model), VersionSpec(task="embedding"), caller=SYSTEM
    )
    registry.db.close()
    certificate = self_signed(root / "tls")
    port = free_port()
    options = ["--host", "127.0.0.1", "--port", str(port)]
    tls = ["--ssl-certfile", str(certificate.cert), "--ssl-keyfile", str(certificate.key)]
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command(*options, *tls),
            env=server_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"https://127.0.0.1:{port}"
    try:
        _wait_ready(url, certificate, process, log_path)
        yield HttpsServer(url, certificate)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(
    url: str, certificate: Certificate, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(verify=certificate.trusting_context(), timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()}")
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"server did not become ready in {STARTUP_TIMEOUT_S} s")


def test_the_openai_client_talks_https_to_a_trusted_self_signed_server(
    https_server: HttpsServer,
) -> None:
    trusting = httpx.Client(verify=https_server.certificate.trusting_context())
    with openai.OpenAI(
        base_url=f"{https_server.url}/v1", api_key=ADMIN_KEY, http_client=trusting
    ) as client:
        assert "tiny" in {model.id for model in client.models.list()}
        embedding = client.embeddings.create(model="tiny", input=["hello over TLS"])
    assert len(embedding.data[0].embedding) == 32
    assert trusting.is_closed


def test_an_untrusted_certificate_and_plain_http_are_refused(https_server: HttpsServer) -> None:
    with (
        openai.OpenAI(
            base_url=f"{https_server.url}/v1", api_key=ADMIN_KEY, max_retries=0
        ) as client,
        pytest.raises(openai.APIConnectionError) as untrusted,
    ):
        client.models.list()
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value.__cause__)
    plain = https_server.url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/readyz", timeout=5.0)


def test_tls_options_are_checked_before_the_server_starts(tmp_path: Path) -> None:
    certificate = self_signed(tmp_path / "a", "a")
    stranger = self_signed(tmp_path / "b", "b")

    def serve(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            serve_command("--port", "1", *options),
            env=server_env(tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    only_cert = serve("--ssl-certfile", str(certificate.cert))
    assert only_cert.returncode == 2
    assert "--ssl-certfile needs --ssl-keyfile too" in only_cert.stderr
    missing = serve(
        "--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile", str(certificate.key)
    )
    assert missing.returncode == 2
    assert f"--ssl-certfile {tmp_path / 'nope.pem'}: no such file" in missing.stderr
    mismatched = serve("--ssl-certfile", str(certificate.cert), "--ssl-keyfile", str(stranger.key))
    assert mismatched.returncode == 1
    assert "cannot serve TLS" in mismatched.stderr
    for result in (only_cert, missing, mismatched):
        assert len(result.stderr.strip().splitlines()) == 1  # one line, never a traceback


def test_the_cli_trusts_the_certificate_through_ssl_cert_file(https_server: HttpsServer) -> None:
    env = {
        **os.environ,
        "SSL_CERT_FILE": str(https_server.certificate.cert),
        "OPENMAAS_URL": https_server.url,
        "OPENMAAS_API_KEY": ADMIN_KEY,
    }
    listed = subprocess.run(
        [sys.executable, "-m", "openmaas.cli.main", "models", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert '"name": "tiny"' in listed.stdout


def test_a_console_session_cookie_over_tls_is_secure(https_server: HttpsServer) -> None:
    with httpx.Client(verify=https_server.certificate.trusting_context()) as client:
        signed_in = client.post(f"{https_server.url}/ui/session", json={"key": ADMIN_KEY})
    assert signed_in.status_code == 200, signed_in.text
    cookie = signed_in.headers["set-cookie"]
    assert "; Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
