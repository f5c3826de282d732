"""Fast by default, against a real server and one `openmaas worker`: a transformers encoder
uploaded to a CPU server queues its ONNX export by itself (the server's default: the test
leaves `OPENMAAS_AUTO_ONNX` unset); the export is stored as the version's variant, not as a
version, and the pool serves the version from it, answering as the transformers files did.
A corrupted variant falls back to the version's own files; deleting the version deletes the
variant's files; an optimization job's output gets no variant job; the setting turns it off.

The worker starts only once the transformers answers are recorded, so "before the variant
existed" is a fact of the test, not a race with the export.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from openmaas import Client
from openmaas.protocol.optimization import OptimizationJobOut
from openmaas.protocol.registry import VersionOut
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import build_bert

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["what a delight", "a dreary, joyless mess of a film", "ok"]
MODELS = {"fast-a": 0, "fast-b": 1, "fast-c": 2}  # name: the tiny BERT's seed
ACTOR = "system:auto-onnx"
SERVER_ENV: dict[str, str | None] = {
    "OPENMAAS_AUTO_ONNX": None,  # the default (on) is what this module tests
    "OPENMAAS_WORKERS": "0",  # the test starts the worker once it has the "before" answers
    "OPENMAAS_JOB_HEARTBEAT_S": "0.5",
    "OPENMAAS_TRAINING_THREADS": "1",
    # Every answer computed, none from the cache (which would outlive a model swap).
    "OPENMAAS_CACHE_MAX_ENTRIES": "0",
    # The worker is another process: the server sees the variant once its resolution expires.
    "OPENMAAS_RESOLVE_TTL_S": "0.2",
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("variants") / "home", SERVER_ENV)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def oai(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as client:
        yield client


def embeddings(oai: openai.OpenAI, model: str) -> np.ndarray[Any, Any]:
    answer = oai.embeddings.create(model=model, input=TEXTS)
    return np.array([item.embedding for item in answer.data])


def variant_jobs(sdk: Client) -> dict[str, OptimizationJobOut]:
    """The server's own variant jobs, by the version each builds the variant of."""
    jobs = sdk.list_optimization_jobs(limit=100).data
    return {job.variant_of: job for job in jobs if job.variant_of is not None}


@pytest.fixture(scope="module")
def before(
    sdk: Client, oai: openai.OpenAI, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Three encoders uploaded, and what the transformers files answer while no worker
    runs: the jobs their uploads queued, their vectors, what serves them."""
    for name, seed in MODELS.items():
        path = build_bert(tmp_path_factory.mktemp(name) / "bert", seed=seed)
        sdk.upload(name, path, task="embedding", params={"normalize": "l2"})
    return {
        "jobs": variant_jobs(sdk),
        "vectors": {name: embeddings(oai, name) for name in MODELS},
        "versions": {name: sdk.get_version(name, 1) for name in MODELS},
    }


@pytest.fixture(scope="module")
def worker(
    server: RunningServer, before: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "openmaas.cli.main", "worker", "--workers", "1"],
            env=server.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    yield
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def exported(sdk: Client, worker: None) -> dict[str, OptimizationJobOut]:
    """The three variant jobs, finished."""

    def all_finished() -> dict[str, OptimizationJobOut] | None:
        jobs = variant_jobs(sdk)
        done = [job for job in jobs.values() if job.finished]
        return jobs if len(done) == len(MODELS) else None

    return wait_for("the variant jobs to finish", all_finished, timeout_s=600)


def variant_directory(server: RunningServer, version: VersionOut) -> Path:
    """Where the artifact store keeps the version's variant (found by its graph's hash)."""
    (variant,) = version.variants
    graph = next(f for f in variant.files if f.path == "model.onnx")
    objects = server.home / "artifacts" / "objects"
    for directory in objects.iterdir():
        candidate = directory / "model.onnx"
        if (
            candidate.is_file()
            and hashlib.sha256(candidate.read_bytes()).hexdigest() == graph.sha256
        ):
            return directory
    raise AssertionError(f"no stored directory holds the variant of {version.reference}")


def served_by(sdk: Client, name: str) -> str | None:
    return sdk.get_version(name, 1).served_by


def test_an_uploaded_encoder_is_exported_and_served_from_its_onnx_variant(
    server: RunningServer,
    sdk: Client,
    oai: openai.OpenAI,
    before: dict[str, Any],
    exported: dict[str, OptimizationJobOut],
) -> None:
    # Queued by the upload itself, in the uploader's project, by the server.
    queued = before["jobs"]["fast-a:1"]
    assert (queued.status, queued.method, queued.created_by) == ("queued", "onnx", ACTOR)
    assert queued.project == "default"
    assert before["versions"]["fast-a"].served_by == "transformers"
    assert before["versions"]["fast-a"].variants == []

    job = exported["fast-a:1"]
    assert job.status == "succeeded", job.error
    assert job.optimized_model == "fast-a:1"
    version = sdk.get_version("fast-a", 1)
    # An extra of the version, which itself is unchanged: no new version, no new model.
    assert [v.version for v in sdk.list_versions("fast-a")] == [1]
    assert "fast-a-onnx" not in [m.name for m in sdk.list_models()]
    assert (version.runtime, version.files) == ("transformers", before["versions"]["fast-a"].files)
    (variant,) = version.variants
    assert (variant.kind, variant.runtime, variant.job_id) == ("onnx", "onnx", job.id)
    assert variant.metrics["export_max_abs_difference"] <= 1e-4
    assert variant.metrics["throughput_speedup_batch32"] > 0
    assert "model.onnx" in [f.path for f in variant.files]

    # The loaded transformers model is swapped for the variant on a request after the
    # server's resolution of fast-a expires.
    def on_onnx() -> np.ndarray[Any, Any] | None:
        vectors = embeddings(oai, "fast-a")
        return vectors if served_by(sdk, "fast-a") == "onnx" else None

    vectors = wait_for("fast-a to be served by its onnx variant", on_onnx, timeout_s=60)
    np.testing.assert_allclose(vectors, before["vectors"]["fast-a"], atol=1e-4)
    cards = {card.id: card for card in oai.models.list().data}
    assert cards["fast-a"].model_extra is not None
    assert cards["fast-a"].model_extra["served_by"] == "onnx"

    audit = sdk.audit(actor=ACTOR, action="job.create").data
    assert f"jobs/{job.id}" in [event.target for event in audit]


def test_a_corrupted_variant_falls_back_to_the_versions_own_files(
    server: RunningServer,
    sdk: Client,
    oai: openai.OpenAI,
    before: dict[str, Any],
    exported: dict[str, OptimizationJobOut],
) -> None:
    assert exported["fast-b:1"].status == "succeeded", exported["fast-b:1"].error
    graph = variant_directory(server, sdk.get_version("fast-b", 1)) / "model.onnx"
    graph.chmod(0o600)
    graph.write_bytes(b"not an onnx graph")
    for action in ("unload", "load"):  # loaded again, from the corrupted variant's files
        answer = httpx.post(
            f"{server.url}/v2/repository/models/fast-b/{action}", headers=server.headers
        )
        assert answer.status_code == 200, answer.text

    np.testing.assert_allclose(embeddings(oai, "fast-b"), before["vectors"]["fast-b"], atol=1e-5)
    assert served_by(sdk, "fast-b") == "transformers"
    metrics = httpx.get(f"{server.url}/metrics", headers=server.headers).text
    assert 'openmaas_model_loads_total{model="fast-b",outcome="fallback"} 1.0' in metrics


def test_deleting_a_version_deletes_its_variants_files(
    server: RunningServer, sdk: Client, exported: dict[str, OptimizationJobOut]
) -> None:
    assert exported["fast-c:1"].status == "succeeded", exported["fast-c:1"].error
    directory = variant_directory(server, sdk.get_version("fast-c", 1))
    sdk.delete_version("fast-c", 1)
    assert not directory.exists()


def test_an_optimization_jobs_output_gets_no_variant_job(
    sdk: Client, exported: dict[str, OptimizationJobOut]
) -> None:
    """A truncated encoder is a transformers embedding model too: the lineage says a job
    made it, so no export of it is queued (nor of its export, and so on)."""
    job = sdk.create_optimization_job("fast-a", "truncate_layers", model_name="fast-a-short")

    def finished() -> OptimizationJobOut | None:
        found = sdk.get_optimization_job(job.id)
        return found if found.finished else None

    done = wait_for("the truncate job to finish", finished, timeout_s=300)
    assert done.status == "succeeded", done.error
    version = sdk.get_version("fast-a-short", 1)
    assert (version.runtime, version.task) == ("transformers", "embedding")
    assert version.variants == []
    assert "fast-a-short:1" not in variant_jobs(sdk)
    assert len(variant_jobs(sdk)) == len(MODELS)


def test_with_auto_onnx_off_no_job_is_queued(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", {"OPENMAAS_AUTO_ONNX": "false"})
    try:
        with Client(server.url, api_key=server.key) as sdk:
            sdk.upload("plain", build_bert(tmp_path / "bert"), task="embedding")
            assert sdk.list_optimization_jobs().data == []
            assert sdk.get_version("plain", 1).variants == []
    finally:
        stop_server(server)
