"""The job system on SQLite and PostgreSQL: validation, the state machine, project scoping,
atomic claims by concurrent workers, heartbeats, reclaiming, and the worker's mechanics
(checkpoints, resume, cancel, graceful stop, failure, registration).

The worker tests train `CountingRecipe`, a recipe reduced to the contract's mechanics (steps,
metrics, checkpoints, should_stop, an output directory), so they run in milliseconds; real
recipes train in tests/integration/test_training_jobs.py.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from sqlalchemy import update

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.datasets.service import DatasetService
from openmaas.errors import Conflict, InvalidRequest, NotFound
from openmaas.registry.composition import Registry
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.store.database import Database
from openmaas.store.tables import JobRow
from openmaas.training.entities import FINISHED, TRANSITIONS, Job, JobStatus, can_move
from openmaas.training.jobs import EarlyStopping, JobRequest, JobService
from openmaas.training.queue import JobQueue, LeaseLost
from openmaas.training.recipe import (
    Recipe,
    TrainingContext,
    TrainingResult,
    TrainingStopped,
)
from openmaas.training.schemas import (
    FineTuningCheckpointOut,
    FineTuningEventOut,
    FineTuningJobOut,
)
from openmaas.training.worker import Worker
from tests.conftest import build_registry

ACME = Principal(project="acme", key_id=1, prefix="acme0001", scopes=(Scope.TRAINING,))
OTHER = Principal(project="other", key_id=2, prefix="other001", scopes=(Scope.TRAINING,))
ADMIN = Principal(project="default", key_id=3, prefix="admin001", scopes=(Scope.ADMIN,))


class CountingRecipe(Recipe):
    """Counts steps like a training loop: reports a loss per step, checkpoints its position
    every few steps and when asked to stop, resumes from a checkpoint, writes an output."""

    name = "counting"
    tasks = ("text-classification",)
    description = "test double of a recipe"

    def __init__(self) -> None:
        self.started_from: list[int] = []  # the step each run began at
        self.threads: list[int] = []  # torch's intra-op threads when each run began

    def defaults(self) -> dict[str, Any]:
        return {
            "n_epochs": 2,
            "batch_size": 4,
            "checkpoint_every_steps": 3,
            "step_delay_s": 0.0,
            "fail_at_step": 0,
            "planned_steps": 0,  # > 0: tell the job this total (ctx.plan_steps)
        }

    def resolve(self, given: Any, n_examples: int) -> dict[str, Any]:
        hp = super().resolve(given, n_examples)
        if not isinstance(hp["n_epochs"], int) or hp["n_epochs"] < 1:
            raise ValueError(f"hyperparameter 'n_epochs' must be at least 1, got {hp['n_epochs']}")
        return hp

    def train(self, ctx: TrainingContext) -> TrainingResult:
        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        per_epoch = math.ceil(len(ctx.train) / hp["batch_size"])
        total = hp["n_epochs"] * per_epoch
        step = 0
        if ctx.resume_from is not None:
            state = json.loads((ctx.resume_from.directory / "state.json").read_text())
            step = state["step"]
            assert step == ctx.resume_from.step
        self.started_from.append(step)
        self.threads.append(torch.get_num_threads())
        if hp["planned_steps"]:
            ctx.plan_steps(hp["planned_steps"])
        while step < total:
            if ctx.should_stop():
                self._save(ctx, step, per_epoch)
                raise TrainingStopped(f"stopped at step {step}")
            time.sleep(hp["step_delay_s"])
            step += 1
            if step == hp["fail_at_step"]:
                raise RuntimeError(f"boom at step {step}")
            ctx.report_metrics(step, _epoch(step, per_epoch), {"loss": 1.0 / step})
            if step % hp["checkpoint_every_steps"] == 0:
                self._save(ctx, step, per_epoch)
        (ctx.output_dir / "openmaas.json").write_text(
            json.dumps({"task": ctx.task, "runtime": "rules", "format": "counting"})
        )
        (ctx.output_dir / "steps.json").write_text(json.dumps({"steps": step}))
        return TrainingResult(
            task=ctx.task,
            runtime="rules",
            metrics={"accuracy": 0.75, "macro_f1": 0.7, "nan": float("nan")},
            params={"steps": step},
            trained_tokens=10 * step,
        )

    @staticmethod
    def _save(ctx: TrainingContext, step: int, per_epoch: int) -> None:
        directory = ctx.work_dir / "checkpoint"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "state.json").write_text(json.dumps({"step": step}))
        ctx.save_checkpoint(directory, step, _epoch(step, per_epoch), {"loss": 1.0 / max(1, step)})


def _epoch(step: int, per_epoch: int) -> int:
    return max(1, math.ceil(step / per_epoch))


@dataclass
class Env:
    jobs: JobService
    registry: Registry
    datasets: DatasetService
    recipe: CountingRecipe
    home: Path
    train_file: str  # acme's
    other_file: str  # the other project's

    def worker(
        self, name: str = "w1", heartbeat_s: float = 0.1, threads: int | None = None
    ) -> Worker:
        return Worker(
            worker_id=f"test:{name}",
            queue=self.jobs,
            registry=self.registry,
            datasets=self.datasets,
            recipes={self.recipe.name: self.recipe},
            home=self.home,
            heartbeat_s=heartbeat_s,
            threads=threads,
        )

    def create(self, principal: Principal = ACME, **fields: Any) -> Job:
        fields.setdefault("recipe", "counting")
        fields.setdefault("training_file", self.train_file)
        return self.jobs.create(JobRequest(**fields), principal)


def _jsonl(rows: int, labels: tuple[str, ...] = ("pos", "neg")) -> bytes:
    words = {"pos": "good great fine", "neg": "bad awful poor"}
    lines = [
        json.dumps(
            {
                "text": f"{words.get(labels[i % len(labels)], 'meh')} {i}",
                "label": labels[i % len(labels)],
            }
        )
        for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    registry = build_registry(database_url, tmp_path / "artifacts")
    datasets = DatasetService(registry.db, registry.artifacts)
    recipe = CountingRecipe()
    jobs = JobService(
        registry.db,
        registry=registry,
        datasets=datasets,
        recipes={recipe.name: recipe},
        heartbeat_timeout_s=30.0,
        max_attempts=2,
    )
    train = datasets.create(io.BytesIO(_jsonl(40)), filename="train.jsonl", project="acme")
    other = datasets.create(io.BytesIO(_jsonl(40)), filename="train.jsonl", project="other")
    yield Env(jobs, registry, datasets, recipe, tmp_path / "home", train.id, other.id)
    registry.db.close()


def _age_heartbeat(db: Database, job_id: str, seconds: float) -> None:
    with db.transaction() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


# -- creating: everything checked up front ----------------------------------------------------


def test_a_created_job_is_queued_with_its_hyperparameters_resolved(env: Env) -> None:
    job = env.create(hyperparameters={"n_epochs": 3}, seed=7, alias="staging")

    assert job.id.startswith("ftjob-")
    assert len(job.id) == 30
    assert job.status is JobStatus.QUEUED
    assert job.project == "acme"
    assert job.created_by == "om-acme0001"
    assert job.task == "text-classification"
    assert job.hyperparameters == {**CountingRecipe().defaults(), "n_epochs": 3}
    assert job.seed == 7
    assert job.model_name == f"counting-{job.id[6:14]}"
    messages = [e.message for e in env.jobs.events(job.id, ACME, order="asc").items]
    assert messages[0] == f"Validating training file: {env.train_file}"
    assert (
        messages[1] == "Files validated: 32 training, 4 validation and 4 test examples; job queued"
    )


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"recipe": "nope"}, "recipe", "unknown recipe 'nope' (recipes: counting)"),
        ({"training_file": "file-missing"}, "training_file", "file 'file-missing' not found"),
        ({"task": "token-classification"}, "task", "holds text-classification examples"),
        ({"hyperparameters": {"layers": 2}}, "hyperparameters", "unknown hyperparameters"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters", "'n_epochs' must be at least 1"),
        ({"base_model": "bert"}, "base_model", "trains from scratch"),
        ({"suffix": "no spaces"}, "suffix", "suffix 'no spaces'"),
        ({"alias": "Bad Alias"}, "alias", "invalid alias"),
        ({"early_stopping": EarlyStopping(patience=2)}, "early_stopping", "no hyperparameter"),
        ({"class_imbalance": "weighted"}, "class_imbalance", "no hyperparameter"),
        ({"test_split": 0.0}, "test_split", "must be above 0"),
    ],
)
def test_a_bad_request_is_refused_naming_the_problem_and_nothing_is_recorded(
    env: Env, fields: dict[str, Any], param: str, fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        env.create(**fields)
    assert caught.value.param == param
    assert fragment in caught.value.message
    assert env.jobs.list(ADMIN).items == []


def test_another_projects_file_is_not_found(env: Env) -> None:
    with pytest.raises(InvalidRequest) as caught:
        env.create(training_file=env.other_file)
    assert (caught.value.code, caught.value.param) == ("file_not_found", "training_file")


def test_a_file_too_small_to_split_fails_the_job_with_the_reason(env: Env) -> None:
    tiny = env.datasets.create(io.BytesIO(_jsonl(4)), filename="tiny.jsonl", project="acme")
    with pytest.raises(InvalidRequest) as caught:
        env.create(training_file=tiny.id, test_split=0.05)
    assert caught.value.code == "invalid_training_file"
    (job,) = env.jobs.list(ACME).items
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error["code"] == "invalid_training_file"
    assert "too small to hold out a test split" in job.error["message"]


def test_openai_names_map_onto_the_recipe(env: Env) -> None:
    request = env.jobs.openai_request(
        ACME,
        model="counting",
        training_file=env.train_file,
        hyperparameters={"n_epochs": 4, "batch_size": "auto"},
        suffix="sst",
    )
    job = env.jobs.create(request, ACME)
    assert job.hyperparameters["n_epochs"] == 4
    assert job.hyperparameters["batch_size"] == 4  # auto: the recipe's default
    assert job.model_name.startswith("sst-")
    out = FineTuningJobOut.from_entity(job)
    assert (out.model, out.organization_id, out.status) == ("counting", "acme", "queued")
    assert out.hyperparameters.n_epochs == 4
    # The stock client's own model parses what we send.
    parsed = FineTuningJob.model_validate(out.model_dump(mode="json"))
    assert parsed.id == job.id
    assert parsed.method is not None

    with pytest.raises(InvalidRequest) as caught:
        env.jobs.openai_request(
            ACME,
            model="counting",
            training_file=env.train_file,
            hyperparameters={"learning_rate_multiplier": 2.0},
        )
    assert "no hyperparameter for hyperparameters.learning_rate_multiplier" in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        env.jobs.openai_request(ACME, model="gpt-4o-mini", training_file=env.train_file)
    assert caught.value.code == "model_not_found"
    assert "neither a recipe (counting) nor a model registered here" in caught.value.message


def test_a_registered_model_is_fine_tuned_by_the_recipe_that_fits_it(
    env: Env, tmp_path: Path
) -> None:
    from openmaas.training.recipes import RECIPES

    encoder = tmp_path / "encoder"  # a transformers encoder: config and weights suffice here
    encoder.mkdir()
    (encoder / "config.json").write_text(
        json.dumps({"architectures": ["BertModel"], "model_type": "bert"})
    )
    (encoder / "model.safetensors").write_bytes(b"\0" * 16)
    env.registry.registration.register_plan(
        "encoder", plan_directory(encoder), VersionSpec(project="acme"), caller=SYSTEM
    )
    jobs = JobService(
        env.registry.db, registry=env.registry, datasets=env.datasets, recipes=RECIPES
    )

    request = jobs.openai_request(ACME, model="encoder", training_file=env.train_file)
    assert (request.recipe, request.base_model) == ("finetune_transformer", "encoder")
    prepared = jobs.prepare(request, ACME)
    assert prepared.options["base_version"] == "encoder:1"  # pinned: alias moves do not matter
    assert prepared.options["model"] == "encoder"
    # Another project's private model is not there for it.
    with pytest.raises(InvalidRequest) as caught:
        jobs.openai_request(OTHER, model="encoder", training_file=env.other_file)
    assert (caught.value.code, caught.value.message) == (
        "model_not_found",
        "model 'encoder' not found",
    )
    with pytest.raises(InvalidRequest) as caught:
        jobs.prepare(JobRequest(training_file=env.train_file, recipe="frozen_encoder"), ACME)
    assert caught.value.param == "base_model"
    assert "fine-tunes a base model: name one" in caught.value.message


# -- reading: project scoped, paginated --------------------------------------------------------


def test_jobs_of_another_project_answer_as_missing_and_admins_see_all(env: Env) -> None:
    mine = env.create()
    theirs = env.create(OTHER, training_file=env.other_file)

    assert [j.id for j in env.jobs.list(ACME).items] == [mine.id]
    assert [j.id for j in env.jobs.list(OTHER).items] == [theirs.id]
    assert {j.id for j in env.jobs.list(ADMIN).items} == {mine.id, theirs.id}
    for call in (
        lambda: env.jobs.get(theirs.id, ACME),
        lambda: env.jobs.cancel(theirs.id, ACME),
        lambda: env.jobs.events(theirs.id, ACME),
        lambda: env.jobs.checkpoints(theirs.id, ACME),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.code == "job_not_found"
        assert caught.value.message == f"fine-tuning job {theirs.id!r} not found"
    assert env.jobs.get(theirs.id, ADMIN).project == "other"


def test_listing_pages_newest_first(env: Env) -> None:
    created = [env.create().id for _ in range(5)]
    first = env.jobs.list(ACME, limit=2)
    assert [j.id for j in first.items] == created[::-1][:2]
    assert first.has_more
    second = env.jobs.list(ACME, after=first.items[-1].id, limit=2)
    assert [j.id for j in second.items] == created[::-1][2:4]
    assert second.has_more
    last = env.jobs.list(ACME, after=second.items[-1].id, limit=2)
    assert [j.id for j in last.items] == created[:1]
    assert not last.has_more

    events = env.jobs.events(created[0], ACME, limit=1)  # newest first, like OpenAI
    assert events.has_more
    assert "queued" in events.items[0].message
    older = env.jobs.events(created[0], ACME, after=events.items[0].id, limit=5)
    assert [e.message for e in older.items] == [f"Validating training file: {env.train_file}"]
    parsed = FineTuningJobEvent.model_validate(
        FineTuningEventOut.from_entity(events.items[0]).model_dump(mode="json")
    )
    assert parsed.id == f"ftevent-{events.items[0].id}"
    assert parsed.type == "message"


# -- the state machine ---------------------------------------------------------------------------


def test_the_state_machine_allows_only_its_moves() -> None:
    assert can_move(JobStatus.VALIDATING_FILES, JobStatus.QUEUED)
    assert can_move(JobStatus.QUEUED, JobStatus.RUNNING)
    assert can_move(JobStatus.RUNNING, JobStatus.QUEUED)  # a worker lost or stopping
    assert not can_move(JobStatus.QUEUED, JobStatus.SUCCEEDED)
    assert not can_move(JobStatus.VALIDATING_FILES, JobStatus.RUNNING)
    for finished in FINISHED:
        assert TRANSITIONS[finished] == frozenset()


def test_a_queued_job_cancels_at_once_and_a_finished_one_not_at_all(env: Env) -> None:
    job = env.create()
    cancelled = env.jobs.cancel(job.id, ACME)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert env.jobs.cancel(job.id, ACME).status is JobStatus.CANCELLED  # idempotent
    assert env.jobs.claim("w") is None  # never runs

    done = env.create()
    claimed = env.jobs.claim("w")
    assert claimed is not None
    assert claimed.id == done.id
    env.jobs.succeed(done.id, "w", fine_tuned_model="m", metrics={})
    with pytest.raises(Conflict) as caught:
        env.jobs.cancel(done.id, ACME)
    assert caught.value.code == "job_finished"


def test_a_running_job_is_asked_to_stop_and_its_worker_learns_it(env: Env) -> None:
    job = env.create()
    assert env.jobs.claim("w") is not None
    asked = env.jobs.cancel(job.id, ACME)
    assert asked.status is JobStatus.RUNNING
    assert asked.cancel_requested
    assert env.jobs.heartbeat(job.id, "w").cancel_requested
    env.jobs.finish_cancelled(job.id, "w", "Job cancelled")
    assert env.jobs.get(job.id, ACME).status is JobStatus.CANCELLED


# -- claiming, heartbeats, reclaiming -----------------------------------------------------------


def test_concurrent_workers_claim_each_job_exactly_once(env: Env, database_url: str) -> None:
    created = {env.create().id for _ in range(8)}
    claims: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def work(name: str) -> None:
        # Its own engine and connections, as a separate worker process would have.
        db = Database(database_url)
        queue = JobQueue(db)
        mine: list[str] = []
        try:
            barrier.wait()
            while (job := queue.claim(name)) is not None:
                mine.append(job.id)
        except BaseException as exc:
            failures.append(exc)
        finally:
            claims[name] = mine
            db.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    claimed = [job_id for ids in claims.values() for job_id in ids]
    assert sorted(claimed) == sorted(created)  # every job once, none twice
    for name, ids in claims.items():
        for job_id in ids:
            assert env.jobs.get(job_id, ADMIN).worker_id == name


def test_a_job_whose_worker_stopped_heartbeating_is_requeued_and_fenced(env: Env) -> None:
    job = env.create()
    assert env.jobs.claim("dead") is not None
    assert env.jobs.heartbeat(job.id, "dead").held
    assert env.jobs.reclaim_stale() == []  # fresh heartbeat

    _age_heartbeat(env.jobs.db, job.id, 31)
    assert env.jobs.reclaim_stale() == [job.id]

    requeued = env.jobs.get(job.id, ACME)
    assert (requeued.status, requeued.attempts, requeued.worker_id) == (JobStatus.QUEUED, 1, None)
    last = env.jobs.events(job.id, ACME, limit=1).items[0]
    assert last.level == "warn"
    assert "worker dead stopped heartbeating" in last.message
    assert "will resume from the start (no checkpoint yet); lost runs: 1 of 2" in last.message
    # The old worker's late writes change nothing.
    assert not env.jobs.heartbeat(job.id, "dead").held
    with pytest.raises(LeaseLost):
        env.jobs.succeed(job.id, "dead", fine_tuned_model="x", metrics={})
    claimed = env.jobs.claim("alive")
    assert claimed is not None
    assert claimed.worker_id == "alive"


def test_a_job_that_loses_its_worker_max_attempts_times_fails_with_the_reason(env: Env) -> None:
    job = env.create()
    for _ in range(2):  # max_attempts=2
        assert env.jobs.claim("flaky") is not None
        _age_heartbeat(env.jobs.db, job.id, 60)
        assert env.jobs.reclaim_stale() == [job.id]

    failed = env.jobs.get(job.id, ACME)
    assert failed.status is JobStatus.FAILED
    assert failed.attempts == 2
    assert failed.error is not None
    assert failed.error["code"] == "worker_lost"
    assert "lost its worker 2 times (at most 2 allowed)" in failed.error["message"]
    assert env.jobs.claim("next") is None


def test_a_graceful_release_and_a_supervisors_reclaim(env: Env) -> None:
    job = env.create()
    assert env.jobs.claim("a") is not None
    assert env.jobs.release(job.id, "a", "worker a is stopping")
    assert env.jobs.get(job.id, ACME).attempts == 0  # nothing went wrong
    assert env.jobs.claim("b") is not None
    assert env.jobs.reclaim_worker("b", "worker b was killed by SIGKILL") == [job.id]
    again = env.jobs.get(job.id, ACME)
    assert (again.status, again.attempts) == (JobStatus.QUEUED, 1)


def test_a_reclaimed_job_that_was_being_cancelled_ends_cancelled(env: Env) -> None:
    job = env.create()
    assert env.jobs.claim("w") is not None
    env.jobs.cancel(job.id, ACME)
    assert env.jobs.reclaim_worker("w", "worker w exited") == [job.id]
    assert env.jobs.get(job.id, ACME).status is JobStatus.CANCELLED


# -- the worker --------------------------------------------------------------------------------


def _run_next(worker: Worker) -> Job:
    job = worker.queue.claim(worker.worker_id)
    assert job is not None
    worker.run_job(job)
    return job


def _when(
    condition: Callable[[], bool], action: Callable[[], object], timeout_s: float = 20
) -> threading.Thread:
    """Run `action` in a thread as soon as `condition` holds."""

    def wait() -> None:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        action()

    thread = threading.Thread(target=wait)
    thread.start()
    return thread


def _steps(env: Env, job_id: str) -> list[int]:
    events = env.jobs.events(job_id, ADMIN, order="asc", limit=1000).items
    return [int(e.data["step"]) for e in events if e.type == "metrics" and e.data]


def test_a_worker_trains_registers_and_records_everything(env: Env) -> None:
    job = env.create(alias="staging", seed=3)
    _run_next(env.worker())

    done = env.jobs.get(job.id, ACME)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.fine_tuned_model == job.model_name
    assert done.metrics == {"accuracy": 0.75, "macro_f1": 0.7}  # NaN dropped
    assert done.trained_tokens == 160
    assert _steps(env, job.id) == list(range(1, 17))
    metrics_event = next(
        e
        for e in env.jobs.events(job.id, ACME, order="asc", limit=100).items
        if e.type == "metrics"
    )
    assert metrics_event.data is not None
    assert metrics_event.data["total_steps"] == 16
    assert metrics_event.data["epoch"] == 1
    assert metrics_event.message.startswith("Step 1/16 (epoch 1): loss=1")

    version = env.registry.resolve(f"{job.model_name}@staging", caller=SYSTEM)
    assert (version.version, version.project, version.task) == (1, "acme", "text-classification")
    assert version.metrics == {"accuracy": 0.75, "macro_f1": 0.7}
    assert version.lineage.job_id == job.id
    assert version.lineage.dataset_id == env.train_file
    assert version.lineage.dataset_sha256 == env.datasets.get(env.train_file).content_sha256
    assert version.params["training"]["hyperparameters"] == dict(job.hyperparameters)
    assert version.params["steps"] == 16
    # Checkpoints: the newest three kept, in the store, listed newest first.
    checkpoints = env.jobs.checkpoints(job.id, ACME).items
    assert [c.step for c in checkpoints] == [15, 12, 9]
    assert all(
        (env.registry.artifacts.root / c.location / "state.json").is_file() for c in checkpoints
    )
    out = FineTuningCheckpointOut.from_entity(checkpoints[0], job.model_name)
    parsed = FineTuningCheckpointOut.model_validate(out.model_dump())
    assert FineTuningJobCheckpoint.model_validate(parsed.model_dump()).step_number == 15
    assert not (env.home / "training" / "jobs" / job.id).exists()  # scratch removed


def test_a_recipe_that_plans_its_steps_sets_the_progress_total(env: Env) -> None:
    # 40 examples in batches of 4 over 2 epochs would be guessed as 20 steps; the recipe
    # says 32 (as a recipe whose steps are blocks of tokens would), and it runs 16.
    job = env.create(hyperparameters={"planned_steps": 32})
    _run_next(env.worker())
    events = env.jobs.events(job.id, ACME, order="asc", limit=100).items
    totals = {e.data["total_steps"] for e in events if e.type == "metrics" and e.data}
    assert totals == {32}
    first = next(e for e in events if e.type == "metrics")
    assert first.message.startswith("Step 1/32 (epoch 1)")


def test_a_worker_trains_on_the_threads_it_is_given(env: Env) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        env.create()
        _run_next(env.worker(threads=1))
        env.create()
        _run_next(env.worker())  # unset: torch's own setting stays
        assert env.recipe.threads == [1, 1]
    finally:
        torch.set_num_threads(before)


def test_a_stopped_worker_hands_its_job_back_and_the_next_resumes_at_its_checkpoint(
    env: Env,
) -> None:
    job = env.create(hyperparameters={"step_delay_s": 0.02})
    first = env.worker("first")
    stopper = _when(lambda: len(_steps(env, job.id)) >= 7, first.stop)  # as SIGTERM does
    _run_next(first)
    stopper.join()

    released = env.jobs.get(job.id, ACME)
    assert (released.status, released.attempts) == (JobStatus.QUEUED, 0)
    stopped_at = env.jobs.checkpoints(job.id, ACME).items[0].step
    assert stopped_at >= 7

    _run_next(env.worker("second"))
    assert env.jobs.get(job.id, ACME).status is JobStatus.SUCCEEDED
    assert env.recipe.started_from == [0, stopped_at]
    steps = _steps(env, job.id)
    assert steps == list(range(1, 17))  # continued where it stopped: no step twice
    messages = [e.message for e in env.jobs.events(job.id, ACME, order="asc", limit=200).items]
    assert any("is stopping; it handed the job back" in m for m in messages)
    assert any(
        m.startswith("Resuming from checkpoint") and f"at step {stopped_at}" in m for m in messages
    )


def test_cancel_stops_a_running_job_within_a_step_and_keeps_its_checkpoint(env: Env) -> None:
    job = env.create(hyperparameters={"step_delay_s": 0.02})
    asked_at: list[float] = []

    def cancel() -> None:
        asked_at.append(time.monotonic())
        env.jobs.cancel(job.id, ACME)

    canceller = _when(lambda: len(_steps(env, job.id)) >= 5, cancel)
    _run_next(env.worker())
    stopped_s = time.monotonic() - asked_at[0]
    canceller.join()

    cancelled = env.jobs.get(job.id, ACME)
    assert cancelled.status is JobStatus.CANCELLED
    assert stopped_s < 2.0  # should_stop reads the flag at most every 0.5 s
    (newest, *_) = env.jobs.checkpoints(job.id, ACME).items
    assert newest.step == max(_steps(env, job.id))  # saved where it stopped
    last = env.jobs.events(job.id, ACME, limit=1).items[0]
    assert last.message == f"Job cancelled; checkpoint {newest.id} (step {newest.step}) is kept"


def test_a_failing_recipe_fails_the_job_with_its_traceback(env: Env) -> None:
    job = env.create(hyperparameters={"fail_at_step": 4})
    _run_next(env.worker())

    failed = env.jobs.get(job.id, ACME)
    assert failed.status is JobStatus.FAILED
    assert failed.error == {
        "code": "training_failed",
        "message": "RuntimeError: boom at step 4",
        "param": None,
    }
    events = env.jobs.events(job.id, ACME, order="asc", limit=100).items
    traceback = next(e for e in events if e.message.startswith("Traceback of the failure"))
    assert traceback.level == "error"
    assert traceback.data is not None
    assert 'raise RuntimeError(f"boom at step {step}")' in traceback.data["traceback"]


def test_a_worker_whose_job_was_taken_drops_it_without_touching_it(env: Env) -> None:
    job = env.create(hyperparameters={"step_delay_s": 0.02})
    worker = env.worker("slow")
    taker = _when(
        lambda: len(_steps(env, job.id)) >= 4,
        lambda: env.jobs.reclaim_worker("test:slow", "worker slow missed its heartbeats"),
    )
    _run_next(worker)
    taker.join()

    taken = env.jobs.get(job.id, ACME)
    assert (taken.status, taken.attempts, taken.worker_id) == (JobStatus.QUEUED, 1, None)
    assert taken.error is None
