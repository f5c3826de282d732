"""Training jobs against a real server with a real worker process: the stock `openai` client
fine-tunes and then calls the model; a worker killed with SIGKILL mid-training is restarted
and its job resumes from its checkpoint; cancel stops within seconds; jobs belong to their
project; the training scope and the daily quota apply; the CLI trains and follows.

Jobs train the real `textcnn` recipe on a slice of SST-2. The tests that must act in the
middle of training use `SlowTextCNN` (the same recipe, each step delayed), which the server
and its worker load through OPENMAAS_EXTRA_RECIPES.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from openmaas import APIError, Client
from openmaas.protocol.training import TrainingEventOut, TrainingJobOut
from openmaas.training.precision import supports_bf16
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.textcnn import TextCNNRecipe
from tests.conftest import SHARED_DATASETS, _reset_postgres
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.integration.waiting import wait_for
from tests.runtimes.tiny_models import build_bert

ROOT = Path(__file__).resolve().parents[2]
SST2 = (SHARED_DATASETS or Path("shared-datasets-missing")) / "sst2" / "train.tsv"


class SlowTextCNN(TextCNNRecipe):
    """textcnn with every step delayed by `step_delay_s`: time to act mid-training."""

    name = "slow_textcnn"
    description = "textcnn, slowed down for tests"

    def defaults(self) -> dict[str, Any]:
        return {**super().defaults(), "step_delay_s": 0.0}

    def train(self, ctx: TrainingContext) -> TrainingResult:
        delay = float(ctx.hyperparameters.get("step_delay_s", 0.0))
        should_stop = ctx.should_stop

        def slowed() -> bool:  # the loop asks before every step
            time.sleep(delay)
            return should_stop()

        ctx.should_stop = slowed
        return super().train(ctx)


# Small networks train fast on 2 CPU cores; the data is small too (192 training examples).
SMALL = {"embedding_dim": 32, "n_filters": 16}
# 24 steps (one epoch in batches of 8), a checkpoint every 4.
SLOW = {**SMALL, "n_epochs": 1, "batch_size": 8, "checkpoint_every_steps": 4, "step_delay_s": 0.1}


# Short heartbeats, so a frozen worker's job is taken over in seconds.
TRAINING_ENV = {
    "OPENMAAS_JOB_HEARTBEAT_S": "0.5",
    "OPENMAAS_JOB_HEARTBEAT_TIMEOUT_S": "3",
    # One torch thread per job: on a busy machine a second one only spins (CPU, not speed).
    "OPENMAAS_TRAINING_THREADS": "1",
    "OPENMAAS_EXTRA_RECIPES": f"{__name__}:SlowTextCNN",
    # The checkout's sources first (not whatever copy is installed), then the tests' module.
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    "OPENMAAS_LOG_LEVEL": "info",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("training") / "home", {**TRAINING_ENV, "OPENMAAS_WORKERS": "1"}
    )
    yield running
    stop_server(running)
    # The server stopped its worker: no worker process of this server is left.
    assert _worker_pids(running.process.pid) == []


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def oai(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def sst2_jsonl() -> bytes:
    """240 SST-2 phrases, half positive, as JSON Lines."""
    if not SST2.is_file():
        pytest.skip(f"needs the shared SST-2 data ({SST2})")
    with SST2.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    positive = [text for text, label in rows if label == "1" and len(text.split()) > 3][:120]
    negative = [text for text, label in rows if label == "0" and len(text.split()) > 3][:120]
    lines = [
        json.dumps({"text": text, "label": label})
        for pair in zip(positive, negative, strict=True)
        for text, label in zip(pair, ("positive", "negative"), strict=True)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def file_id(oai: openai.OpenAI, sst2_jsonl: bytes) -> str:
    uploaded = oai.files.create(file=("sst2.jsonl", sst2_jsonl), purpose="fine-tune")
    assert uploaded.status == "processed", uploaded.status_details
    return uploaded.id


def finished(sdk: Client, job_id: str, timeout_s: float = 180.0) -> TrainingJobOut:
    def check() -> TrainingJobOut | None:
        job = sdk.get_training_job(job_id)
        return job if job.finished else None

    return wait_for(f"job {job_id} to finish", check, timeout_s)


def events(sdk: Client, job_id: str) -> list[TrainingEventOut]:
    return list(sdk.training_job_events(job_id, limit=1000).data)


def _worker_pids(server_pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"openmaas.jobs.worker .*--parent-pid {server_pid}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


def _pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[-2])  # host:pid:token


# -- the OpenAI flow -------------------------------------------------------------------------


def test_the_openai_client_fine_tunes_and_the_model_serves(
    server: RunningServer, oai: openai.OpenAI, sdk: Client, file_id: str
) -> None:
    job = oai.fine_tuning.jobs.create(
        model="textcnn",
        training_file=file_id,
        # OpenAI's names, and the recipe's own (SMALL) passed through as they are.
        hyperparameters={"n_epochs": 2, "batch_size": 16, **SMALL},
        suffix="sst2",
        seed=11,
    )
    assert job.object == "fine_tuning.job"
    assert job.status in ("queued", "running")
    assert (job.model, job.seed, job.training_file) == ("textcnn", 11, file_id)

    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        job = oai.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"sst2-{job.id[6:14]}"
    assert job.hyperparameters.n_epochs == 2
    assert job.finished_at is not None
    assert job.trained_tokens

    listed = oai.fine_tuning.jobs.list_events(job.id, limit=100).data  # newest first
    assert listed[0].message == f"Job succeeded: registered {job.fine_tuned_model}"
    metrics = [e for e in listed if e.type == "metrics"]
    assert metrics
    assert all(isinstance(e.data, dict) and "step" in e.data for e in metrics)
    epoch_ends = [e.data for e in metrics if isinstance(e.data, dict) and "val_accuracy" in e.data]
    assert len(epoch_ends) == 2
    assert all({"train_loss", "val_loss", "val_macro_f1"} <= set(d) for d in epoch_ends)
    # The one checkpoint offered is the published model, pinned to its version.
    checkpoints = oai.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.fine_tuned_model_checkpoint for c in checkpoints] == [f"{job.fine_tuned_model}:1"]
    assert job.id in [j.id for j in oai.fine_tuning.jobs.list(limit=100).data]

    # The fine-tuned model answers at once, under the name the job reported.
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": job.fine_tuned_model, "input": ["a gorgeous, witty film", "dull"]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    labels = [item["label"] for item in answer.json()["data"]]
    assert set(labels) <= {"positive", "negative"}

    # A new version in a safe format, with test-split metrics, hyperparameters and lineage.
    version = sdk.resolve(job.fine_tuned_model)
    assert (version.version, version.task, version.runtime) == (
        1,
        "text-classification",
        "openmaas-nn",
    )
    assert {"accuracy", "macro_f1"} <= set(version.metrics)
    trained_with = version.params["training"]["hyperparameters"]
    assert trained_with["n_epochs"] == 2
    assert {k: trained_with[k] for k in SMALL} == SMALL
    assert version.lineage.job_id == job.id
    assert version.lineage.dataset_id == file_id
    assert version.lineage.dataset_sha256 == sdk.get_dataset(file_id).content_sha256
    assert not any(f.path.endswith((".bin", ".pt", ".pkl")) for f in version.files)


def test_a_training_job_registers_a_new_version_and_moves_its_alias(
    server: RunningServer, sdk: Client, file_id: str
) -> None:
    job = sdk.create_training_job(
        "textcnn",
        file_id,
        hyperparameters={**SMALL, "n_epochs": 2, "batch_size": 16},
        early_stopping={"patience": 1, "metric": "macro_f1"},
        class_imbalance="weighted",
        model_name="sentiment",
        alias="staging",
    )
    assert job.status == "queued"
    assert job.hyperparameters["class_weighting"] == "weighted"
    assert job.hyperparameters["patience"] == 1
    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == "sentiment:1"
    assert sdk.resolve("sentiment@staging").version == 1
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": "sentiment@staging", "input": "what a delight"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def assert_classifies_sentiment(server: RunningServer, model: str) -> None:
    """`/v1/classify` answers with the sentiment file's two labels for every input."""
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": model, "input": ["what a delight", "a dreary mess"]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert all(
        {label["label"] for label in row["labels"]} == {"negative", "positive"}
        for row in answer.json()["data"]
    )


def test_a_frozen_encoder_job_over_an_embedding_model_serves_a_head_over_it(
    server: RunningServer, sdk: Client, file_id: str, tmp_path: Path
) -> None:
    sdk.upload("tiny-encoder", build_bert(tmp_path / "encoder"), task="embedding")
    job = sdk.create_training_job(
        "frozen_encoder",
        file_id,
        base_model="tiny-encoder",
        hyperparameters={"n_epochs": 3, "learning_rate": 1e-2},
        model_name="sentiment-head",
    )
    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    version = sdk.resolve("sentiment-head")
    assert (version.task, version.runtime, version.format) == (
        "text-classification",
        "linear-head",
        "safetensors",
    )
    assert version.params["encoder"] == "tiny-encoder:1"
    assert version.lineage.source["base_model"] == "tiny-encoder:1"
    assert_classifies_sentiment(server, "sentiment-head")


def test_a_finetune_over_an_embedding_model_registers_and_serves_its_own_encoder(
    server: RunningServer, sdk: Client, file_id: str, tmp_path: Path
) -> None:
    sdk.upload("tiny-sentences", build_bert(tmp_path / "encoder"), task="embedding")
    job = sdk.create_training_job(
        "finetune_transformer",
        file_id,
        base_model="tiny-sentences",
        hyperparameters={"n_epochs": 1, "max_length": 32},
        model_name="sentiment-tuned",
    )
    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    version = sdk.resolve("sentiment-tuned")
    assert (version.task, version.runtime) == ("text-classification", "linear-head")
    assert version.params["features"] == "embedding"
    assert "encoder" not in version.params  # served from its own files
    assert {f.path for f in version.files} >= {"openmaas.json", "encoder/config.json"}
    assert_classifies_sentiment(server, "sentiment-tuned")
    # The defaults: batches grouped by length, fp32 (bf16 is asked for with "bf16-if-supported").
    assert version.params["training_precision"] == "fp32"
    said = [e.message for e in events(sdk, job.id) if e.message.startswith("precision: ")]
    assert said == ["precision: fp32; batches grouped by length"]


def test_a_finetune_runs_in_the_precision_asked_for_and_refuses_an_unknown_one(
    sdk: Client, file_id: str, tmp_path: Path
) -> None:
    sdk.upload("tiny-bert", build_bert(tmp_path / "encoder"), task="embedding")
    job = sdk.create_training_job(
        "finetune_transformer",
        file_id,
        base_model="tiny-bert",
        hyperparameters={
            "n_epochs": 1,
            "max_length": 32,
            "precision": "bf16-if-supported",
            "group_by_length": False,
        },
        model_name="sentiment-auto",
    )
    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    # bf16 where this CPU has it in hardware, else fp32, and the job says which.
    expected = "bf16" if supports_bf16("cpu") else "fp32"
    assert sdk.resolve("sentiment-auto").params["training_precision"] == expected
    said = [e.message for e in events(sdk, job.id) if e.message.startswith("precision: ")]
    assert len(said) == 1
    assert said[0].startswith(f"precision: {expected}")
    assert said[0].endswith("; batches shuffled")

    with pytest.raises(APIError) as refused:
        sdk.create_training_job(
            "finetune_transformer",
            file_id,
            base_model="tiny-bert",
            hyperparameters={"precision": "fp16"},
        )
    assert refused.value.status_code == 400
    assert "'precision' must be one of bf16-if-supported, bf16, fp32, got 'fp16'" in str(
        refused.value
    )


# -- crash recovery and cancel ---------------------------------------------------------------


def test_a_worker_killed_mid_training_is_replaced_and_the_job_resumes_from_its_checkpoint(
    server: RunningServer, sdk: Client, file_id: str
) -> None:
    job = sdk.create_training_job("slow_textcnn", file_id, hyperparameters=SLOW, seed=5)
    checkpoint = wait_for(
        "a first checkpoint",
        lambda: next(iter(sdk.training_job_checkpoints(job.id).data), None),
    )
    running = sdk.get_training_job(job.id)
    assert running.status == "running"
    assert running.worker_id is not None
    victim = _pid_of(running.worker_id)
    assert victim in _worker_pids(server.process.pid)

    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    resumed = wait_for(
        "the job to resume",
        lambda: next((e for e in events(sdk, job.id) if e.message.startswith("Resuming")), None),
        timeout_s=60,
    )
    resume_s = time.monotonic() - killed_at
    print(f"SIGKILL to resumed training: {resume_s:.1f} s")

    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    assert done.attempts == 1  # one lost run
    assert done.worker_id not in (None, running.worker_id)  # its replacement finished it
    history = events(sdk, job.id)
    messages = [e.message for e in history]
    assert any(f"worker {running.worker_id} was killed by SIGKILL" in m for m in messages)
    newest = max(
        (e for e in history if e.message.startswith("Checkpoint ") and e.id < resumed.id),
        key=lambda e: e.id,
    )
    assert resumed.data is not None
    assert newest.data is not None
    assert resumed.data["checkpoint"] == newest.data["checkpoint"]  # the newest one
    resumed_step = int(resumed.data["step"])
    assert resumed_step >= checkpoint.step
    # Step numbers continue from the checkpoint instead of starting again.
    after = [
        int(e.data["step"]) for e in history if e.type == "metrics" and e.id > resumed.id and e.data
    ]
    assert after
    assert after[0] > resumed_step
    assert after == sorted(after)
    assert after[-1] == 24  # every step trained, the ones after the checkpoint once
    assert resume_s < 30
    # The supervisor started another worker in its place.
    assert victim not in _worker_pids(server.process.pid)
    assert len(_worker_pids(server.process.pid)) == 1


def test_cancel_stops_within_seconds_and_keeps_the_last_checkpoint(
    oai: openai.OpenAI, sdk: Client, file_id: str
) -> None:
    job = sdk.create_training_job("slow_textcnn", file_id, hyperparameters=SLOW)
    wait_for("a first checkpoint", lambda: sdk.training_job_checkpoints(job.id).data or None)

    asked_at = time.monotonic()
    cancelled = oai.fine_tuning.jobs.cancel(job.id)  # answers once the worker let go
    stop_s = time.monotonic() - asked_at
    assert cancelled.status == "cancelled"
    print(f"cancel to cancelled: {stop_s:.1f} s")
    assert stop_s < 5
    assert cancelled.finished_at is not None
    assert cancelled.fine_tuned_model is None

    checkpoints = sdk.training_job_checkpoints(job.id).data
    assert checkpoints
    last = events(sdk, job.id)[-1]
    assert last.message == (
        f"Job cancelled; checkpoint {checkpoints[0].id} (step {checkpoints[0].step}) is kept"
    )
    assert oai.fine_tuning.jobs.cancel(job.id).status == "cancelled"  # idempotent


def test_standalone_workers_share_a_postgresql_queue_and_take_over_a_frozen_workers_job(
    tmp_path: Path, pg_database_url: str, sst2_jsonl: bytes
) -> None:
    """`openmaas worker` processes (as on other machines) on the server's PostgreSQL: one
    freezes mid-job (SIGSTOP: no heartbeats, no exit), the other takes the job over after
    the heartbeat timeout and resumes it; the frozen one, thawed, finds it gone."""
    _reset_postgres(pg_database_url)
    server = start_server(
        tmp_path / "home",
        {**TRAINING_ENV, "OPENMAAS_DATABASE_URL": pg_database_url, "OPENMAAS_WORKERS": "0"},
    )
    workers: subprocess.Popen[bytes] | None = None
    try:
        with Client(server.url, api_key=server.key) as sdk:
            upload = sdk.upload_dataset(_write(tmp_path / "sst2.jsonl", sst2_jsonl))
            job = sdk.create_training_job("slow_textcnn", upload.id, hyperparameters=SLOW)
            time.sleep(1.5)
            assert sdk.get_training_job(job.id).status == "queued"  # the server runs none

            with (tmp_path / "workers.log").open("wb") as log:
                workers = subprocess.Popen(
                    [sys.executable, "-m", "openmaas.cli.main", "worker", "--workers", "2"],
                    env=server.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            wait_for(
                "a first checkpoint", lambda: sdk.training_job_checkpoints(job.id).data or None
            )
            first = sdk.get_training_job(job.id).worker_id
            assert first is not None
            frozen = _pid_of(first)
            os.kill(frozen, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:

                def taken_over() -> TrainingEventOut | None:
                    return next(
                        (
                            e
                            for e in events(sdk, job.id)
                            if e.message.startswith("Resuming") and first not in e.message
                        ),
                        None,
                    )

                wait_for("another worker to take the job over", taken_over, timeout_s=60)
                print(f"frozen worker to resumed elsewhere: {time.monotonic() - frozen_at:.1f} s")
            finally:
                os.kill(frozen, signal.SIGCONT)
            done = finished(sdk, job.id)
            assert done.status == "succeeded", done.error
            assert done.attempts == 1
            assert done.worker_id != first
            assert any(
                f"worker {first} stopped heartbeating" in e.message for e in events(sdk, job.id)
            )
            # The thawed worker dropped the job instead of finishing it a second time.
            assert [v.version for v in sdk.list_versions(done.model_name)] == [1]
    finally:
        if workers is not None:
            workers.send_signal(signal.SIGTERM)
            assert workers.wait(timeout=30) == 0
        stop_server(server)
    assert "Ctrl-C stops them" in (tmp_path / "workers.log").read_text()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- tenancy, scopes, quotas, audit ----------------------------------------------------------


def test_jobs_belong_to_their_project_and_need_the_training_scope(
    server: RunningServer, sdk: Client, sst2_jsonl: bytes
) -> None:
    sdk.create_project("acme", limits={"training_jobs_per_day": 1})
    sdk.create_project("globex")
    acme_key = sdk.create_key("acme-trainer", ["training"], project="acme").key
    globex_key = sdk.create_key("globex-trainer", ["training"], project="globex").key
    reader_key = sdk.create_key("acme-reader", ["inference"], project="acme").key

    acme = openai.OpenAI(base_url=f"{server.url}/v1", api_key=acme_key, max_retries=0)
    globex = openai.OpenAI(base_url=f"{server.url}/v1", api_key=globex_key, max_retries=0)
    reader = openai.OpenAI(base_url=f"{server.url}/v1", api_key=reader_key, max_retries=0)
    with acme, globex, reader:
        upload = acme.files.create(file=("acme.jsonl", sst2_jsonl), purpose="fine-tune")
        job = acme.fine_tuning.jobs.create(model="slow_textcnn", training_file=upload.id)
        assert job.organization_id == "acme"

        # Another project's job answers exactly like a missing one.
        for call in (
            lambda: globex.fine_tuning.jobs.retrieve(job.id),
            lambda: globex.fine_tuning.jobs.cancel(job.id),
            lambda: globex.fine_tuning.jobs.list_events(job.id),
            lambda: globex.fine_tuning.jobs.checkpoints.list(job.id),
        ):
            with pytest.raises(openai.NotFoundError) as missing:
                call()
            assert missing.value.code == "job_not_found"
        assert globex.fine_tuning.jobs.list().data == []
        # ... and another project's file cannot be trained on.
        with pytest.raises(openai.BadRequestError) as refused:
            globex.fine_tuning.jobs.create(model="textcnn", training_file=upload.id)
        assert refused.value.code == "file_not_found"
        # Admins see every project's jobs.
        assert sdk.get_training_job(job.id).project == "acme"

        # No training scope: 403, whatever the job.
        with pytest.raises(openai.PermissionDeniedError) as denied:
            reader.fine_tuning.jobs.create(model="textcnn", training_file=upload.id)
        assert denied.value.code == "insufficient_scope"
        with pytest.raises(openai.PermissionDeniedError):
            reader.fine_tuning.jobs.list()

        # training_jobs_per_day=1: the second job of the day is refused, and not created.
        with pytest.raises(openai.RateLimitError) as quota:
            acme.fine_tuning.jobs.create(model="textcnn", training_file=upload.id)
        assert quota.value.code == "quota_exceeded"
        assert [j.id for j in acme.fine_tuning.jobs.list().data] == [job.id]

        cancelled = acme.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status in ("cancelled", "running")
        finished(sdk, job.id)

    audit = sdk.audit(target=f"jobs/{job.id}")
    assert [event.action for event in audit.data] == ["job.create", "job.cancel"]
    assert audit.data[0].project == "acme"
    assert audit.data[1].after is not None
    assert audit.data[1].after["cancel_requested"] is True


def test_bad_requests_name_the_problem(oai: openai.OpenAI, file_id: str) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"model": "gpt-4o-mini"}, "model", "neither a recipe"),
        ({"model": "textcnn", "training_file": "file-nope"}, "training_file", "not found"),
        ({"model": "textcnn", "hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs", ""),
        ({"model": "textcnn", "suffix": "has spaces"}, "suffix", "suffix 'has spaces'"),
        ({"model": "textcnn", "method": {"type": "dpo"}}, "method.type", "only 'supervised'"),
    ]
    for fields, param, fragment in cases:
        body = {"training_file": file_id, **fields}
        with pytest.raises(openai.BadRequestError) as refused:
            oai.fine_tuning.jobs.create(**body)
        error = refused.value.body
        assert isinstance(error, dict)
        assert error["param"] == param, error
        assert fragment in error["message"]


# -- the CLI ---------------------------------------------------------------------------------


EVENT_LINE = re.compile(r"\d\d:\d\d:\d\d ")  # how `train` and `jobs follow` print an event


def event_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if EVENT_LINE.match(line)]


def test_the_cli_trains_lists_shows_and_cancels(
    server: RunningServer, sdk: Client, sst2_jsonl: bytes, tmp_path: Path
) -> None:
    data = tmp_path / "sst2.jsonl"
    data.write_bytes(sst2_jsonl)
    env = {**os.environ, "OPENMAAS_URL": server.url, "OPENMAAS_API_KEY": server.key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "openmaas.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    small = [arg for key, value in SMALL.items() for arg in ("--hp", f"{key}={value}")]
    trained = cli(
        "train", "textcnn", str(data), "--epochs", "1", *small, "--suffix", "cli", "--json"
    )
    assert trained.returncode == 0, trained.stderr
    job = json.loads(trained.stdout)
    assert job["status"] == "succeeded"
    assert job["fine_tuned_model"].startswith("cli-")
    assert "uploaded sst2.jsonl as file-" in trained.stderr
    assert "Job succeeded" in trained.stderr  # the events, as lines when not a terminal
    # Through a pipe, each event is one line, once (they were printed twice).
    shown = [e for e in events(sdk, job["id"]) if not (e.type == "metrics" and e.data)]
    expected = [f"{e.created_at.astimezone():%H:%M:%S} {e.message}" for e in shown]
    assert event_lines(trained.stderr) == expected
    followed_again = cli("jobs", "follow", job["id"])
    assert followed_again.returncode == 0, followed_again.stderr
    assert event_lines(followed_again.stderr) == expected

    listed = cli("jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["id"] == job["id"]
    shown = cli("jobs", "show", job["id"])
    assert shown.returncode == 0, shown.stderr
    assert job["fine_tuned_model"] in shown.stdout

    detached = cli("train", "slow_textcnn", job["training_file"], *small, "--detach", "--json")
    assert detached.returncode == 0, detached.stderr
    slow = json.loads(detached.stdout)
    cancelled = cli("jobs", "cancel", slow["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    followed = cli("jobs", "follow", slow["id"])
    assert followed.returncode == 1
    assert f"job {slow['id']} was cancelled" in followed.stderr

    missing = cli("jobs", "show", "ftjob-000000000000000000000000")
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_the_sdk_reports_errors_with_codes(sdk: Client) -> None:
    with pytest.raises(APIError) as caught:
        sdk.get_training_job("ftjob-missing")
    assert (caught.value.status_code, caught.value.code) == (404, "job_not_found")
    assert {recipe.name for recipe in sdk.recipes()} >= {"textcnn", "slow_textcnn"}


# -- the examples of docs/training.md --------------------------------------------------------

DOCS = ROOT / "docs" / "training.md"


def doc_blocks(title: str, language: str) -> list[str]:
    text = DOCS.read_text()
    start = text.index(f"## {title}")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_the_docs_examples_run_as_written(
    server: RunningServer, sst2_jsonl: bytes, tmp_path: Path
) -> None:
    (tmp_path / "sst2.jsonl").write_bytes(sst2_jsonl)
    env = {**os.environ, "OPENMAAS_URL": server.url, "OPENMAAS_API_KEY": server.key}
    [script] = doc_blocks("With the OpenAI client", "python")
    ran = subprocess.run(
        [sys.executable, "-c", script.replace("http://127.0.0.1:8000", server.url)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert re.fullmatch(r"succeeded sentiment-[0-9a-f]{8}", lines[0])
    assert lines[1] == f"message Job succeeded: registered {lines[0].split()[1]}"
    assert lines[-1] in ("positive", "negative")

    [commands] = doc_blocks("With curl", "bash")
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert '"model_name": "sentiment"' in ran.stdout
    assert "Files validated" in ran.stdout
    assert ran.stdout.splitlines()[-1] in ("cancelled", "running")  # running: stopping
