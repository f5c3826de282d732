"""Jobs against a real server with a real worker process, attacked as the audit did (issue 13):

- a job's base model is pinned when the job is created: deleted and registered again under
  the same name by another project before a worker runs the job, it fails the job with a
  clear message, and the job never trains on the other project's model;
- a failing job tells its tenant one line, without a traceback or the server's paths (the
  traceback is in the worker's log);
- the worker process does not hold the admin key, the key pepper or the encryption key in its
  environment, and still trains and registers (encrypted at rest) end to end.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import APIError, Client
from openmaas.protocol.training import TrainingJobOut
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.textcnn import TextCNNRecipe
from tests.integration.conftest import ADMIN_KEY, RunningServer, start_server, stop_server
from tests.integration.test_training_jobs import SMALL, TRAINING_ENV, _worker_pids
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import build_bert

PEPPER = secrets.token_urlsafe(32)
ENCRYPTION_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


class LeakyTextCNN(TextCNNRecipe):
    """textcnn that fails the way a recipe does on a missing file: an OSError that quotes
    the worker's scratch path (under the server's home)."""

    name = "leaky_textcnn"
    description = "fails with an error naming a server path, for tests"

    def train(self, ctx: TrainingContext) -> TrainingResult:
        (ctx.work_dir / "vocabulary.json").open(encoding="utf-8").close()
        raise AssertionError("unreachable: the file does not exist")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    recipes = f"tests.integration.test_training_jobs:SlowTextCNN,{__name__}:LeakyTextCNN"
    running = start_server(
        tmp_path_factory.mktemp("isolation") / "home",
        {
            **TRAINING_ENV,
            "OPENMAAS_EXTRA_RECIPES": recipes,
            "OPENMAAS_WORKERS": "1",
            "OPENMAAS_KEY_PEPPER": PEPPER,
            "OPENMAAS_ENCRYPTION_KEY": ENCRYPTION_KEY,
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def tenants(sdk: Client) -> dict[str, str]:
    """A key (models:read, models:write, training) of projects `acme` and `globex`."""
    keys = {}
    for project in ("acme", "globex"):
        sdk.create_project(project)
        keys[project] = sdk.create_key(
            f"{project}-trainer", ["models:read", "models:write", "training"], project=project
        ).key
    return keys


def _examples() -> bytes:
    words = {"positive": "great lovely fine superb", "negative": "awful dull bad poor"}
    lines = [
        json.dumps({"text": f"{words[label]} film number {i}", "label": label})
        for i in range(60)
        for label in ("positive", "negative")
    ]
    return ("\n".join(lines) + "\n").encode()


def _file(server: RunningServer, key: str) -> str:
    uploaded = httpx.post(
        f"{server.url}/v1/files",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("reviews.jsonl", _examples())},
        data={"purpose": "fine-tune"},
    )
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["status"] == "processed", uploaded.text
    file_id: str = uploaded.json()["id"]
    return file_id


def finished(client: Client, job_id: str) -> TrainingJobOut:
    def check() -> TrainingJobOut | None:
        job = client.get_training_job(job_id)
        return job if job.finished else None

    return wait_for(f"job {job_id} to finish", check, timeout_s=180.0)


def test_the_worker_holds_no_admin_key_pepper_or_encryption_key_and_still_trains(
    server: RunningServer, sdk: Client
) -> None:
    (pid,) = wait_for("the worker", lambda: _worker_pids(server.process.pid) or None)
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    names = {entry.split(b"=", 1)[0].upper() for entry in environ.split(b"\0") if entry}
    for secret in (ADMIN_KEY, PEPPER, ENCRYPTION_KEY):
        assert secret.encode() not in environ
    assert not names & {b"OPENMAAS_ADMIN_KEY", b"OPENMAAS_KEY_PEPPER", b"OPENMAAS_ENCRYPTION_KEY"}
    # The encryption key reaches it in a file only its user may read.
    values = dict(entry.split(b"=", 1) for entry in environ.split(b"\0") if b"=" in entry)
    key_file = Path(values[b"OPENMAAS_ENCRYPTION_KEY_FILE"].decode())
    assert key_file.parent == server.home / "secrets"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # ... and the job still trains, checkpoints and registers, encrypted at rest.
    job = sdk.create_training_job(
        "textcnn",
        _file(server, server.key),
        hyperparameters={**SMALL, "n_epochs": 1},
        model_name="no-secrets-model",
    )
    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    version = sdk.resolve("no-secrets-model")
    assert version.lineage.job_id == job.id


def test_a_base_model_registered_again_by_another_project_is_never_trained_on(
    server: RunningServer, sdk: Client, tenants: dict[str, str], tmp_path: Path
) -> None:
    with (
        Client(server.url, api_key=tenants["acme"]) as acme,
        Client(server.url, api_key=tenants["globex"]) as globex,
    ):
        acme.upload("shared-base", build_bert(tmp_path / "acme-encoder"), task="embedding")
        training_file = _file(server, tenants["acme"])

        # The only worker is busy, so acme's job waits in the queue meanwhile.
        blocker = sdk.create_training_job(
            "slow_textcnn",
            _file(server, server.key),
            hyperparameters={**SMALL, "n_epochs": 50, "batch_size": 8, "step_delay_s": 0.2},
        )
        wait_for(
            "the blocking job to run", lambda: sdk.get_training_job(blocker.id).status == "running"
        )
        job = acme.create_training_job(
            "frozen_encoder",
            training_file,
            base_model="shared-base",
            hyperparameters={"n_epochs": 1},
            model_name="acme-head",
        )
        assert acme.get_training_job(job.id).status == "queued"

        # acme deletes its model; globex registers its own under the freed name.
        acme.delete_model("shared-base")
        globex.upload("shared-base", build_bert(tmp_path / "globex-encoder"), task="embedding")
        assert globex.get_model("shared-base").latest_version == 1
        with pytest.raises(APIError) as hidden:
            acme.get_model("shared-base")
        assert hidden.value.status_code == 404

        sdk.cancel_training_job(blocker.id)
        failed = finished(acme, job.id)

    assert failed.status == "failed"
    assert failed.error is not None
    message = failed.error["message"]
    assert message.startswith("the base model shared-base:1 this job was created with is gone")
    assert failed.fine_tuned_model is None
    with pytest.raises(APIError) as missing:
        sdk.get_model("acme-head")
    assert missing.value.status_code == 404


def test_a_failed_job_shows_its_tenant_one_line_without_traceback_or_server_paths(
    server: RunningServer, tenants: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {tenants['acme']}"}
    training_file = _file(server, tenants["acme"])
    created = httpx.post(
        f"{server.url}/v1/fine_tuning/jobs",
        headers=headers,
        json={"model": "leaky_textcnn", "training_file": training_file},
    )
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]

    def failed() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(
            f"{server.url}/v1/fine_tuning/jobs/{job_id}", headers=headers
        ).json()
        return body if body["status"] in ("failed", "succeeded", "cancelled") else None

    job = wait_for(f"job {job_id} to fail", failed, timeout_s=180.0)
    assert job["status"] == "failed"
    events = httpx.get(
        f"{server.url}/v1/fine_tuning/jobs/{job_id}/events", headers=headers, params={"limit": 100}
    )
    assert events.status_code == 200
    seen = json.dumps({"job": job, "events": events.json()})
    assert "Traceback" not in seen
    assert str(server.home) not in seen
    assert "/tmp" not in seen
    assert os.sep + "training" not in seen
    assert job["error"]["message"] == (
        "FileNotFoundError: [Errno 2] No such file or directory: '<server path>'"
    )
    # The operator still has the traceback, in the worker's log (the server's output).
    log = server.log.read_text(errors="replace")
    assert f"job {job_id} failed" in log
    assert "Traceback" in log
    assert "vocabulary.json" in log
