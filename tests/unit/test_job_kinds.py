"""The job system is generic over kinds: a kind that is not training (`EchoKind`, a test
double) goes through the same service, queue, worker, checkpoints and publishing; workers
claim only the kinds they run; every JobService entry point refuses a missing caller; jobs
recorded before kinds existed are training jobs."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from openmaas.api.openai.fine_tuning_adapter import openai_request
from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.datasets.service import DatasetService
from openmaas.errors import InvalidRequest, MissingCaller, NotFound
from openmaas.jobs.context import JobContext
from openmaas.jobs.entities import Job, JobStatus, NewJob
from openmaas.jobs.kinds import Admission, JobKind, JobKinds
from openmaas.jobs.publish import JobOutput, JobResult
from openmaas.jobs.service import JobService
from openmaas.jobs.worker import Worker
from openmaas.registry.composition import Registry
from openmaas.training.kind import TrainingJobKind
from tests.conftest import build_registry

ACME = Principal(project="acme", key_id=1, prefix="acme0001", scopes=(Scope.TRAINING,))


@dataclass(frozen=True, slots=True)
class EchoRequest:
    text: str


class EchoKind:
    """A job kind reduced to the contract: checks its input, runs one checkpointed step
    (resuming from a stored checkpoint when there is one) and publishes a tiny model."""

    name = "echo"
    failure_code = "echo_failed"

    def __init__(self) -> None:
        self.resumed_from: list[int | None] = []

    def prepare(self, request: Any, *, caller: Principal) -> NewJob:
        assert isinstance(request, EchoRequest)
        job_id = f"ftjob-{secrets.token_hex(12)}"
        return NewJob(
            id=job_id,
            kind=self.name,
            project=caller.project,
            key_id=caller.key_id,
            created_by=caller.actor,
            recipe="echo",
            task="text-classification",
            base_model=None,
            training_file="",
            validation_file=None,
            hyperparameters={"text": request.text},
            options={},
            suffix=None,
            seed=0,
            model_name=f"echo-{job_id[6:14]}",
            alias="staging",
        )

    def checking_message(self, job: NewJob) -> str:
        return "Checking the text"

    def check_inputs(self, job: Job) -> Admission:
        text_ = str(job.hyperparameters["text"])
        if not text_:
            raise InvalidRequest("the text is empty", param="text")
        return Admission(f"Text of {len(text_)} characters; job queued", {"chars": len(text_)})

    def run(self, context: JobContext) -> JobOutput:
        restored = context.restore_checkpoint(context.scratch / "resume")
        self.resumed_from.append(restored.checkpoint.step if restored is not None else None)
        state = context.scratch / "state"
        state.mkdir(parents=True, exist_ok=True)
        (state / "echo.json").write_text(json.dumps({"text": context.job.hyperparameters["text"]}))
        context.save_checkpoint(state, 1, 1, {"loss": 0.5})
        context.report_metrics(1, 1, {"loss": 0.5})
        output = context.scratch / "output"
        output.mkdir(parents=True, exist_ok=True)
        (output / "openmaas.json").write_text(
            json.dumps({"task": "text-classification", "runtime": "rules", "format": "echo"})
        )
        return JobOutput(
            directory=output,
            task="text-classification",
            runtime="rules",
            description=f"Echoed by job {context.job.id}",
            metrics={"accuracy": 1.0},
            source={"type": "echo-job", "job_id": context.job.id},
            transform="echo",
        )


@dataclass
class Env:
    jobs: JobService
    echo: EchoKind
    registry: Registry
    home: Path

    def worker(self, *kinds: JobKind) -> Worker:
        return Worker(
            worker_id="test:w",
            queue=self.jobs.queue,
            kinds=kinds,
            registry=self.registry,
            home=self.home,
            heartbeat_s=0.1,
        )


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    registry = build_registry(database_url, tmp_path / "artifacts")
    echo = EchoKind()
    training = TrainingJobKind(
        registry.db,
        registry=registry,
        datasets=DatasetService(registry.db, registry.artifacts),
        recipes={},
    )
    jobs = JobService(registry.db, kinds=[echo, training])
    yield Env(jobs, echo, registry, tmp_path / "home")
    registry.db.close()


def test_a_kind_other_than_training_runs_through_the_shared_machinery(env: Env) -> None:
    job = env.jobs.create("echo", EchoRequest("hello"), caller=ACME)
    assert (job.kind, job.status, job.project) == ("echo", JobStatus.QUEUED, "acme")
    messages = [e.message for e in env.jobs.events(job.id, caller=ACME, order="asc").items]
    assert messages == ["Checking the text", "Text of 5 characters; job queued"]

    # A worker claims only the kinds it runs.
    assert env.jobs.queue.claim("test:trainer", {"training"}) is None
    claimed = env.jobs.queue.claim("test:w", {"echo"})
    assert claimed is not None
    env.worker(env.echo).run_job(claimed)

    done = env.jobs.get(job.id, caller=ACME)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.fine_tuned_model == job.model_name
    assert done.metrics == {"accuracy": 1.0}
    version = env.registry.resolve(f"{job.model_name}@staging", caller=SYSTEM)
    assert (version.project, version.lineage.job_id) == ("acme", job.id)
    assert version.lineage.transform == "echo"
    assert version.lineage.source["type"] == "echo-job"
    assert version.lineage.source["job_id"] == job.id
    # Its checkpoint is in the artifact store, by key.
    (checkpoint,) = env.jobs.checkpoints(job.id, caller=ACME).items
    keys = env.registry.artifacts.list_keys(checkpoint.location)
    assert keys == [f"{checkpoint.location}/echo.json"]
    assert json.loads(env.registry.artifacts.get_bytes(keys[0])) == {"text": "hello"}
    assert not (env.home / "training" / "jobs" / job.id).exists()


def test_a_requeued_job_of_any_kind_resumes_from_its_stored_checkpoint(env: Env) -> None:
    job = env.jobs.create("echo", EchoRequest("again"), caller=ACME)
    claimed = env.jobs.queue.claim("test:w", {"echo"})
    assert claimed is not None
    env.worker(env.echo).run_job(claimed)
    # As if it had been lost right after: a new run restores the stored checkpoint.
    with env.jobs.db.transaction() as session:
        session.execute(
            text("UPDATE training_jobs SET status = 'queued', worker_id = NULL WHERE id = :id"),
            {"id": job.id},
        )
    again = env.jobs.queue.claim("test:w", {"echo"})
    assert again is not None
    env.worker(env.echo).run_job(again)
    assert env.echo.resumed_from == [None, 1]
    assert env.jobs.get(job.id, caller=ACME).status is JobStatus.SUCCEEDED
    # Published once: the second run found the version the first registered.
    assert [
        v.lineage.job_id for v in env.registry.store.list_versions(job.model_name, caller=SYSTEM)
    ] == [job.id]


def test_a_worker_without_the_jobs_kind_fails_it_naming_what_it_has(env: Env) -> None:
    job = env.jobs.create("echo", EchoRequest("x"), caller=ACME)
    claimed = env.jobs.queue.claim("test:w")
    assert claimed is not None
    env.worker().run_job(claimed)
    failed = env.jobs.get(job.id, caller=ACME)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert "job kind 'echo' is not installed on worker test:w" in failed.error["message"]


def test_inputs_a_kind_refuses_fail_the_job_and_an_unknown_kind_is_refused(env: Env) -> None:
    with pytest.raises(InvalidRequest) as caught:
        env.jobs.create("echo", EchoRequest(""), caller=ACME)
    assert caught.value.code == "invalid_training_file"
    (job,) = env.jobs.list(caller=ACME).items
    assert job.status is JobStatus.FAILED

    with pytest.raises(InvalidRequest) as unknown:
        env.jobs.create("optimization", EchoRequest("x"), caller=ACME)
    assert (unknown.value.code, unknown.value.param) == ("unknown_kind", "kind")
    assert "kinds: echo, training" in unknown.value.message
    assert JobKinds([env.echo]).names == frozenset({"echo"})


def test_every_entry_point_refuses_a_missing_caller(env: Env) -> None:
    job = env.jobs.create("echo", EchoRequest("mine"), caller=ACME)
    prepared = env.jobs.prepare("echo", EchoRequest("later"), caller=ACME)
    none: Any = None
    calls: list[Callable[[], object]] = [
        lambda: env.jobs.create("echo", EchoRequest("x"), caller=none),
        lambda: env.jobs.prepare("echo", EchoRequest("x"), caller=none),
        lambda: env.jobs.submit(prepared, caller=none),
        lambda: env.jobs.get(job.id, caller=none),
        lambda: env.jobs.list(caller=none),
        lambda: env.jobs.events(job.id, caller=none),
        lambda: env.jobs.checkpoints(job.id, caller=none),
        lambda: env.jobs.cancel(job.id, caller=none),
        lambda: openai_request(
            env.jobs.kind("training"),  # type: ignore[arg-type]
            caller=none,
            model="textcnn",
            training_file="file-1",
        ),
    ]
    for call in calls:
        with pytest.raises(MissingCaller) as caught:
            call()
        assert caught.value.status_code == 403
    # Nothing was recorded or changed by the refused calls.
    assert [j.id for j in env.jobs.list(caller=SYSTEM).items] == [job.id]
    assert env.jobs.get(job.id, caller=ACME).status is JobStatus.QUEUED


def test_jobs_recorded_before_kinds_existed_are_training_jobs(env: Env) -> None:
    with env.jobs.db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO training_jobs (id, project, key_id, created_by, recipe, task, "
                "training_file, hyperparameters, options, seed, model_name, status, metrics, "
                "cancel_requested, attempts, created_at) VALUES ('ftjob-old', 'acme', 1, "
                "'om-acme0001', 'textcnn', 'text-classification', 'file-1', '{}', '{}', 0, "
                "'old', 'queued', '{}', FALSE, 0, CURRENT_TIMESTAMP)"
            )
        )
    assert env.jobs.get("ftjob-old", caller=ACME).kind == "training"
    claimed = env.jobs.queue.claim("test:trainer", {"training"})
    assert claimed is not None
    assert claimed.id == "ftjob-old"


class TallyKind(EchoKind):
    """A kind whose run registers no model: it returns a `JobResult`."""

    name = "tally"

    def run(self, context: JobContext) -> JobResult:  # type: ignore[override]
        return JobResult("counted 3 things", {"things": 3.0})


def test_a_kind_that_registers_no_model_succeeds_with_its_result(env: Env) -> None:
    tally = TallyKind()
    jobs = JobService(env.jobs.db, kinds=[tally, env.echo])
    job = jobs.create("tally", EchoRequest("x"), caller=ACME)
    claimed = jobs.queue.claim("test:w", {"tally"})
    assert claimed is not None
    env.worker(tally).run_job(claimed)
    done = jobs.get(job.id, caller=ACME)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert (done.fine_tuned_model, done.metrics) == (None, {"things": 3.0})
    assert jobs.events(job.id, caller=ACME).items[0].message == "Job succeeded: counted 3 things"
    # Nothing was registered under the job's model name.
    assert job.model_name not in [m.name for m in env.registry.list_models(caller=SYSTEM)]


def test_a_job_of_another_kind_answers_like_a_missing_one(env: Env) -> None:
    echo = env.jobs.create("echo", EchoRequest("mine"), caller=ACME)
    assert env.jobs.get(echo.id, caller=ACME, kind="echo").id == echo.id
    for call in (
        lambda: env.jobs.get(echo.id, caller=ACME, kind="training"),
        lambda: env.jobs.cancel(echo.id, caller=ACME, kind="training"),
        lambda: env.jobs.events(echo.id, caller=ACME, kind="training"),
    ):
        with pytest.raises(NotFound) as missing:
            call()
        assert missing.value.code == "job_not_found"
    with pytest.raises(NotFound) as batch:
        env.jobs.get(echo.id, caller=ACME, kind="batch")
    assert (batch.value.param, batch.value.code) == ("batch_id", "batch_not_found")
    assert env.jobs.list(caller=ACME, kind="training").items == []
    assert [j.id for j in env.jobs.list(caller=ACME, kind="echo").items] == [echo.id]


def test_a_refused_job_is_returned_failed_when_asked(env: Env) -> None:
    prepared = env.jobs.prepare("echo", EchoRequest(""), caller=ACME)
    failed = env.jobs.submit(prepared, caller=ACME, refuse=False)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error["message"] == "the text is empty"


def test_an_in_process_worker_runs_jobs_and_leaves_the_database_open(env: Env) -> None:
    """A worker thread in the server claims what is queued (woken rather than at its next
    poll), and stopping and closing it leaves the database it shares with the server open."""
    worker = Worker(
        worker_id="test:in-process",
        queue=env.jobs.queue,
        kinds=[TallyKind()],
        registry=env.registry,
        home=env.home,
        heartbeat_s=0.1,
        in_process=True,
    )
    jobs = JobService(env.jobs.db, kinds=[TallyKind()])
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        job = jobs.create("tally", EchoRequest("x"), caller=ACME)
        worker.wake()
        done = threading.Event()

        def finished() -> bool:
            return jobs.get(job.id, caller=ACME).status is JobStatus.SUCCEEDED

        for _ in range(200):
            if finished():
                done.set()
                break
            done.wait(0.05)
        assert done.is_set()
    finally:
        worker.stop()
        thread.join(10)
        worker.close()
    assert jobs.get(job.id, caller=ACME).status is JobStatus.SUCCEEDED  # the db is still open
