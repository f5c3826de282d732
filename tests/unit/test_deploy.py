"""Packaging, checked without Docker or a cluster (neither is reachable here): the Dockerfile
passes hadolint and keeps its promises (stages, a user without privileges, CPU torch pinned
and installed first, a health check on a real probe route); the Compose file parses under a
strict Compose-spec parser; the Helm chart renders with the real `helm` (v4) for object
storage and for a shared volume, lints clean, and every manifest it renders validates against
the Kubernetes schemas (`kubernetes-validate`, strict). Every variable the manifests set is a
setting the server reads. No image is built and nothing is deployed by these tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyOptions

from openmaas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "openmaas"
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schemas.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
# Variables that are not OpenMaaS settings but that the manifests may set.
OTHER_VARIABLES = {
    "HOME",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
SECRETS = {
    "database.url": "postgresql://openmaas:pw@postgres:5432/openmaas",
    "secrets.adminKey": "om-abcd1234_" + "k" * 43,
    "secrets.keyPepper": "p" * 43,
    "secrets.encryptionKey": "a2V5" * 11,
}
SETTINGS = {f"OPENMAAS_{name.upper()}" for name in Settings.model_fields}


def helm_binary() -> str:
    found = shutil.which("helm") or str(ROOT / ".tools" / "bin" / "helm")
    if not Path(found).is_file():
        pytest.skip("no helm binary: run `make tools` (deploy/tools/install_helm.py)")
    return found


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def render(values: dict[str, str]) -> list[dict[str, Any]]:
    sets = [arg for name, value in values.items() for arg in ("--set", f"{name}={value}")]
    rendered = helm("template", "openmaas", str(CHART), "--namespace", "ml", *sets)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in by_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment["metadata"]["name"], container


# -- Dockerfile ------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    linter = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    linted = subprocess.run(
        [linter, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (linted.returncode, linted.stdout) == (0, ""), linted.stdout + linted.stderr


def test_the_dockerfile_keeps_its_promises() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2
    assert "COPY --from=build /opt/openmaas /opt/openmaas" in lines
    installs = [line for line in lines if "pip install" in line]
    # CPU torch, pinned, from its own index, before anything that depends on it.
    assert "--index-url" in installs[0]
    assert "torch==2.13.0" in installs[0]
    assert '".[models,s3]"' in installs[1]
    assert "torch==2.13.0" in installs[1]
    user = next(line for line in lines if line.startswith("USER "))
    assert user == "USER 10001:10001"  # numeric: Kubernetes' runAsNonRoot can check it
    assert lines.index(user) > max(lines.index(line) for line in lines if line.startswith("RUN"))
    healthcheck = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert "/readyz" in healthcheck
    assert lines[-2:] == ['ENTRYPOINT ["openmaas"]', 'CMD ["serve"]']
    ignored = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] != "#"
    ]
    assert ignored[:4] == ["*", "!pyproject.toml", "!README.md", "!src/"]


# -- Compose ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = PyOptions(apply_merge=True).from_yaml((DEPLOY / "compose.yaml").read_text())
    parsed.validate()
    return parsed.to_dict()


def test_the_compose_parser_is_strict() -> None:
    with pytest.raises(ValueError, match="helthcheck"):
        PyOptions().from_yaml("services:\n  api:\n    image: x\n    helthcheck: {}\n")


def test_compose_runs_the_api_a_worker_and_their_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"api", "worker", "postgres", "redis", "minio", "bucket"}
    assert services["api"]["command"] == ["serve"]
    assert services["worker"]["command"][0] == "worker"
    assert services["api"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["worker"]["healthcheck"]["disable"] is True  # no HTTP port to check
    for name in ("postgres", "redis", "minio"):
        assert services["api"]["depends_on"][name if name != "minio" else "bucket"]
        assert services[name]["healthcheck"]["test"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert set(env) <= SETTINGS | OTHER_VARIABLES, set(env) - SETTINGS - OTHER_VARIABLES
        assert env["OPENMAAS_ARTIFACTS_URL"].startswith("s3://")
    # The worker runs tenants' recipes: never the admin key or the key pepper.
    assert not {"OPENMAAS_ADMIN_KEY", "OPENMAAS_KEY_PEPPER"} & set(
        services["worker"]["environment"]
    )


def test_make_env_prints_every_variable_compose_requires() -> None:
    printed = subprocess.run(
        [sys.executable, str(DEPLOY / "make_env.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    values = dict(line.split("=", 1) for line in printed.splitlines())
    required = set(re.findall(r"\$\{(\w+):\?", (DEPLOY / "compose.yaml").read_text()))
    assert set(values) == required
    settings = Settings(
        admin_key=values["OPENMAAS_ADMIN_KEY"],
        key_pepper=values["OPENMAAS_KEY_PEPPER"],
        encryption_key=values["OPENMAAS_ENCRYPTION_KEY"],
    )
    from openmaas.auth.keys import parse_key
    from openmaas.crypto import key_from_settings

    assert settings.admin_key is not None
    parse_key(settings.admin_key.get_secret_value())  # a valid API key
    assert key_from_settings(settings) is not None  # a valid AES-256 key


# -- Helm ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_bucket() -> list[dict[str, Any]]:
    return render(
        {
            **SECRETS,
            "artifacts.s3.endpoint": "http://minio:9000",
            "secrets.metricsApiKey": "om-prom0001_" + "m" * 43,
        }
    )


@pytest.fixture(scope="module")
def with_volume() -> list[dict[str, Any]]:
    return render(
        {
            "secrets.existingSecret": "openmaas-keys",
            "artifacts.url": "",
            "metrics.serviceMonitor.enabled": "false",
            "api.replicas": "1",
        }
    )


def test_the_chart_lints_clean() -> None:
    sets = [arg for name, value in SECRETS.items() for arg in ("--set", f"{name}={value}")]
    linted = helm("lint", "--strict", str(CHART), *sets)
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(
    with_bucket: list[dict[str, Any]], with_volume: list[dict[str, Any]], version: str
) -> None:
    checked = []
    for doc in [*with_bucket, *with_volume]:
        if doc["kind"] == "ServiceMonitor":
            continue  # a Prometheus Operator CRD: checked against the Service below
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(doc["kind"])
    assert sorted(set(checked)) == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Secret",
        "Service",
        "ServiceAccount",
    ]


def test_the_schemas_catch_a_broken_manifest(with_bucket: list[dict[str, Any]]) -> None:
    (service,) = by_kind(with_bucket, "Service")
    broken = {**service, "spec": {**service["spec"], "ports": [{"port": "http"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_api_and_the_workers_with_object_storage(with_bucket: list[dict[str, Any]]) -> None:
    names = {doc["metadata"]["name"]: doc for doc in by_kind(with_bucket, "Deployment")}
    assert set(names) == {"openmaas-api", "openmaas-worker"}
    assert not by_kind(with_bucket, "PersistentVolumeClaim")  # the bucket holds the artifacts
    (secret,) = by_kind(with_bucket, "Secret")
    assert set(secret["stringData"]) == {
        "admin-key",
        "key-pepper",
        "encryption-key",
        "database-url",
        "metrics-api-key",
    }
    for deployment, container in containers(with_bucket):
        env = {item["name"]: item for item in container["env"]}
        assert set(env) <= SETTINGS | OTHER_VARIABLES, set(env) - SETTINGS - OTHER_VARIABLES
        assert env["OPENMAAS_ARTIFACTS_URL"]["value"] == "s3://openmaas/artifacts"
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
        assert env["OPENMAAS_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"]["key"] == (
            "encryption-key"
        )
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        if deployment == "openmaas-worker":
            assert container["args"] == ["worker", "--workers", "1"]
            assert not {"OPENMAAS_ADMIN_KEY", "OPENMAAS_KEY_PEPPER"} & set(env)
        else:
            assert container["args"] == ["serve"]
            assert env["OPENMAAS_WORKERS"]["value"] == "0"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    pod = names["openmaas-api"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001


def test_the_service_monitor_scrapes_the_api_service(with_bucket: list[dict[str, Any]]) -> None:
    (monitor,) = by_kind(with_bucket, "ServiceMonitor")
    (service,) = by_kind(with_bucket, "Service")
    (secret,) = by_kind(with_bucket, "Secret")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["name"] == secret["metadata"]["name"]
    assert credentials["key"] in secret["stringData"]


def test_the_grafana_dashboard_ships_as_a_configmap_for_grafanas_sidecar(
    with_bucket: list[dict[str, Any]],
) -> None:
    (configmap,) = by_kind(with_bucket, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(configmap["data"]["openmaas.json"])
    assert shipped == json.loads((DEPLOY / "grafana" / "openmaas.json").read_text())
    # The chart's copy (a chart reads only its own files) is the repository's dashboard.
    assert (CHART / "dashboards" / "openmaas.json").read_bytes() == (
        DEPLOY / "grafana" / "openmaas.json"
    ).read_bytes()
    assert shipped["uid"] == "openmaas"
    assert {panel["type"] for panel in shipped["panels"]} >= {"timeseries", "stat", "row"}
    datasources = {
        target["datasource"]["uid"]
        for panel in shipped["panels"]
        for target in panel.get("targets", [])
    }
    assert datasources == {"${datasource}"}  # the dashboard's Prometheus variable


def test_tracing_is_off_unless_the_chart_names_a_collector(
    with_bucket: list[dict[str, Any]],
) -> None:
    for _, container in containers(with_bucket):
        assert "OPENMAAS_OTEL_ENDPOINT" not in {item["name"] for item in container["env"]}
    traced = render({**SECRETS, "tracing.otlpEndpoint": "http://otel-collector:4318"})
    for _, container in containers(traced):
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["OPENMAAS_OTEL_ENDPOINT"] == "http://otel-collector:4318"


def test_without_a_bucket_a_shared_volume_holds_the_artifacts(
    with_volume: list[dict[str, Any]],
) -> None:
    (claim,) = by_kind(with_volume, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert not by_kind(with_volume, "Secret")  # an existing one is named instead
    assert not by_kind(with_volume, "ServiceMonitor")
    for _, container in containers(with_volume):
        env = {item["name"]: item for item in container["env"]}
        assert "OPENMAAS_ARTIFACTS_URL" not in env
        assert env["OPENMAAS_ARTIFACTS_DIR"]["value"] == "/var/lib/openmaas-artifacts"
        assert env["OPENMAAS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
            "openmaas-keys"
        )
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert "/var/lib/openmaas-artifacts" in mounts


def test_a_missing_secret_is_named_with_the_fix() -> None:
    rendered = helm(
        "template", "openmaas", str(CHART), "--set", f"database.url={SECRETS['database.url']}"
    )
    assert rendered.returncode != 0
    assert "secrets.adminKey is required (python deploy/make_env.py prints one)" in (
        rendered.stderr
    )


# -- docs/deploy.md --------------------------------------------------------------------------

NEEDS_ELSEWHERE = ("# needs Docker", "# needs a cluster")


def doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "deploy.md").read_text()
    return re.findall(r"```bash\n(.*?)```", text, re.DOTALL)


def test_the_deploy_docs_run_as_written(tmp_path: Path) -> None:
    """The blocks that need neither Docker nor a cluster run in order, in a copy of the
    repository's deploy/ (they write deploy/.env); the others must name files that exist."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    tools = [Path(helm_binary()).parent, Path(sys.executable).parent]
    env = {
        "PATH": ":".join([*map(str, tools), "/usr/bin", "/bin"]),
        "HOME": str(tmp_path),
    }
    ran = 0
    for block in doc_blocks():
        if block.startswith(NEEDS_ELSEWHERE):
            for path in re.findall(r"deploy/[\w./-]+", block):
                assert (ROOT / path).exists() or path == "deploy/.env", path
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
        ran += 1
    assert ran == 3
    rendered = [doc for doc in yaml.safe_load_all((tmp_path / "openmaas.yaml").read_text()) if doc]
    assert {doc["kind"] for doc in rendered} >= {"Deployment", "Secret", "ServiceMonitor"}
    (secret,) = by_kind(rendered, "Secret")
    written = dict(
        line.split("=", 1) for line in (tmp_path / "deploy" / ".env").read_text().splitlines()
    )
    assert secret["stringData"]["admin-key"] == written["OPENMAAS_ADMIN_KEY"]
    assert secret["stringData"]["encryption-key"] == written["OPENMAAS_ENCRYPTION_KEY"]
