"""The job system on SQLite and PostgreSQL, through the training kind: the state machine,
project scoping, atomic claims by concurrent workers, heartbeats, reclaiming, and the
worker's mechanics (checkpoints, resume, cancel, graceful stop, failure, registration).

The worker tests train `CountingRecipe` (tests/unit/training_jobs_env.py), so they run in
milliseconds; real recipes train in tests/integration/test_training_jobs.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from openai.types.fine_tuning import FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from openmaas.api.convert.training import fine_tuning_checkpoint_out, fine_tuning_event_out
from openmaas.auth.entities import SYSTEM
from openmaas.errors import Conflict, NotFound
from openmaas.jobs.entities import FINISHED, TRANSITIONS, Job, JobStatus, can_move
from openmaas.jobs.queue import JobQueue, LeaseLost
from openmaas.jobs.worker import Worker
from openmaas.protocol.training import FineTuningCheckpointOut
from openmaas.store.database import Database
from tests.unit.training_jobs_env import (
    ACME,
    ADMIN,
    OTHER,
    Env,
    age_heartbeat,
    make_env,
)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(database_url, tmp_path)


# -- reading: project scoped, paginated --------------------------------------------------------


def test_jobs_of_another_project_answer_as_missing_and_admins_see_all(env: Env) -> None:
    mine = env.create()
    theirs = env.create(OTHER, training_file=env.other_file)

    assert [j.id for j in env.jobs.list(caller=ACME).items] == [mine.id]
    assert [j.id for j in env.jobs.list(caller=OTHER).items] == [theirs.id]
    assert {j.id for j in env.jobs.list(caller=ADMIN).items} == {mine.id, theirs.id}
    for call in (
        lambda: env.jobs.get(theirs.id, caller=ACME),
        lambda: env.jobs.cancel(theirs.id, caller=ACME),
        lambda: env.jobs.events(theirs.id, caller=ACME),
        lambda: env.jobs.checkpoints(theirs.id, caller=ACME),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.code == "job_not_found"
        assert caught.value.message == f"fine-tuning job {theirs.id!r} not found"
    assert env.jobs.get(theirs.id, caller=ADMIN).project == "other"


def test_listing_pages_newest_first(env: Env) -> None:
    created = [env.create().id for _ in range(5)]
    first = env.jobs.list(caller=ACME, limit=2)
    assert [j.id for j in first.items] == created[::-1][:2]
    assert first.has_more
    second = env.jobs.list(caller=ACME, after=first.items[-1].id, limit=2)
    assert [j.id for j in second.items] == created[::-1][2:4]
    assert second.has_more
    last = env.jobs.list(caller=ACME, after=second.items[-1].id, limit=2)
    assert [j.id for j in last.items] == created[:1]
    assert not last.has_more

    events = env.jobs.events(created[0], caller=ACME, limit=1)  # newest first, like OpenAI
    assert events.has_more
    assert "queued" in events.items[0].message
    older = env.jobs.events(created[0], caller=ACME, after=events.items[0].id, limit=5)
    assert [e.message for e in older.items] == [f"Validating training file: {env.train_file}"]
    parsed = FineTuningJobEvent.model_validate(
        fine_tuning_event_out(events.items[0]).model_dump(mode="json")
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
    cancelled = env.jobs.cancel(job.id, caller=ACME)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert env.jobs.cancel(job.id, caller=ACME).status is JobStatus.CANCELLED  # idempotent
    assert env.jobs.queue.claim("w") is None  # never runs

    done = env.create()
    claimed = env.jobs.queue.claim("w")
    assert claimed is not None
    assert claimed.id == done.id
    env.jobs.queue.succeed(done.id, "w", fine_tuned_model="m", metrics={})
    with pytest.raises(Conflict) as caught:
        env.jobs.cancel(done.id, caller=ACME)
    assert caught.value.code == "job_finished"


def test_a_running_job_is_asked_to_stop_and_its_worker_learns_it(env: Env) -> None:
    job = env.create()
    assert env.jobs.queue.claim("w") is not None
    asked = env.jobs.cancel(job.id, caller=ACME)
    assert asked.status is JobStatus.RUNNING
    assert asked.cancel_requested
    assert env.jobs.queue.heartbeat(job.id, "w").cancel_requested
    env.jobs.queue.finish_cancelled(job.id, "w", "Job cancelled")
    assert env.jobs.get(job.id, caller=ACME).status is JobStatus.CANCELLED


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
            assert env.jobs.get(job_id, caller=ADMIN).worker_id == name


def test_a_job_whose_worker_stopped_heartbeating_is_requeued_and_fenced(env: Env) -> None:
    job = env.create()
    assert env.jobs.queue.claim("dead") is not None
    assert env.jobs.queue.heartbeat(job.id, "dead").held
    assert env.jobs.queue.reclaim_stale() == []  # fresh heartbeat

    age_heartbeat(env.jobs.db, job.id, 31)
    assert env.jobs.queue.reclaim_stale() == [job.id]

    requeued = env.jobs.get(job.id, caller=ACME)
    assert (requeued.status, requeued.attempts, requeued.worker_id) == (JobStatus.QUEUED, 1, None)
    last = env.jobs.events(job.id, caller=ACME, limit=1).items[0]
    assert last.level == "warn"
    assert "worker dead stopped heartbeating" in last.message
    assert "will resume from the start (no checkpoint yet); lost runs: 1 of 2" in last.message
    # The old worker's late writes change nothing.
    assert not env.jobs.queue.heartbeat(job.id, "dead").held
    with pytest.raises(LeaseLost):
        env.jobs.queue.succeed(job.id, "dead", fine_tuned_model="x", metrics={})
    claimed = env.jobs.queue.claim("alive")
    assert claimed is not None
    assert claimed.worker_id == "alive"


def test_a_job_that_loses_its_worker_max_attempts_times_fails_with_the_reason(env: Env) -> None:
    job = env.create()
    for _ in range(2):  # max_attempts=2
        assert env.jobs.queue.claim("flaky") is not None
        age_heartbeat(env.jobs.db, job.id, 60)
        assert env.jobs.queue.reclaim_stale() == [job.id]

    failed = env.jobs.get(job.id, caller=ACME)
    assert failed.status is JobStatus.FAILED
    assert failed.attempts == 2
    assert failed.error is not None
    assert failed.error["code"] == "worker_lost"
    assert "lost its worker 2 times (at most 2 allowed)" in failed.error["message"]
    assert env.jobs.queue.claim("next") is None


def test_a_graceful_release_and_a_supervisors_reclaim(env: Env) -> None:
    job = env.create()
    assert env.jobs.queue.claim("a") is not None
    assert env.jobs.queue.release(job.id, "a", "worker a is stopping")
    assert env.jobs.get(job.id, caller=ACME).attempts == 0  # nothing went wrong
    assert env.jobs.queue.claim("b") is not None
    assert env.jobs.queue.reclaim_worker("b", "worker b was killed by SIGKILL") == [job.id]
    again = env.jobs.get(job.id, caller=ACME)
    assert (again.status, again.attempts) == (JobStatus.QUEUED, 1)


def test_a_reclaimed_job_that_was_being_cancelled_ends_cancelled(env: Env) -> None:
    job = env.create()
    assert env.jobs.queue.claim("w") is not None
    env.jobs.cancel(job.id, caller=ACME)
    assert env.jobs.queue.reclaim_worker("w", "worker w exited") == [job.id]
    assert env.jobs.get(job.id, caller=ACME).status is JobStatus.CANCELLED


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
    events = env.jobs.events(job_id, caller=ADMIN, order="asc", limit=1000).items
    return [int(e.data["step"]) for e in events if e.type == "metrics" and e.data]


def test_a_worker_trains_registers_and_records_everything(env: Env) -> None:
    job = env.create(alias="staging", seed=3)
    _run_next(env.worker())

    done = env.jobs.get(job.id, caller=ACME)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.fine_tuned_model == job.model_name
    assert done.metrics == {"accuracy": 0.75, "macro_f1": 0.7}  # NaN dropped
    assert done.trained_tokens == 160
    assert _steps(env, job.id) == list(range(1, 17))
    metrics_event = next(
        e
        for e in env.jobs.events(job.id, caller=ACME, order="asc", limit=100).items
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
    assert (
        version.lineage.dataset_sha256
        == env.datasets.get(env.train_file, caller=SYSTEM).content_sha256
    )
    assert version.params["training"]["hyperparameters"] == dict(job.hyperparameters)
    assert version.params["steps"] == 16
    # Checkpoints: the newest three kept, in the store, listed newest first.
    checkpoints = env.jobs.checkpoints(job.id, caller=ACME).items
    assert [c.step for c in checkpoints] == [15, 12, 9]
    assert all(
        (env.registry.artifacts.root / c.location / "state.json").is_file() for c in checkpoints
    )
    out = fine_tuning_checkpoint_out(env.jobs.get(job.id, caller=ACME), version, checkpoints[0])
    parsed = FineTuningCheckpointOut.model_validate(out.model_dump())
    checkpoint = FineTuningJobCheckpoint.model_validate(parsed.model_dump())
    assert (checkpoint.step_number, checkpoint.metrics.step) == (15, 15)
    assert checkpoint.fine_tuned_model_checkpoint == f"{job.model_name}:1"
    assert not (env.home / "training" / "jobs" / job.id).exists()  # scratch removed


def test_a_recipe_that_plans_its_steps_sets_the_progress_total(env: Env) -> None:
    # 40 examples in batches of 4 over 2 epochs would be guessed as 20 steps; the recipe
    # says 32 (as a recipe whose steps are blocks of tokens would), and it runs 16.
    job = env.create(hyperparameters={"planned_steps": 32})
    _run_next(env.worker())
    events = env.jobs.events(job.id, caller=ACME, order="asc", limit=100).items
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

    released = env.jobs.get(job.id, caller=ACME)
    assert (released.status, released.attempts) == (JobStatus.QUEUED, 0)
    stopped_at = env.jobs.checkpoints(job.id, caller=ACME).items[0].step
    assert stopped_at >= 7

    _run_next(env.worker("second"))
    assert env.jobs.get(job.id, caller=ACME).status is JobStatus.SUCCEEDED
    assert env.recipe.started_from == [0, stopped_at]
    steps = _steps(env, job.id)
    assert steps == list(range(1, 17))  # continued where it stopped: no step twice
    messages = [
        e.message for e in env.jobs.events(job.id, caller=ACME, order="asc", limit=200).items
    ]
    assert any("is stopping; it handed the job back" in m for m in messages)
    assert any(
        m.startswith("Resuming from checkpoint") and f"at step {stopped_at}" in m for m in messages
    )


def test_cancel_stops_a_running_job_within_a_step_and_keeps_its_checkpoint(env: Env) -> None:
    job = env.create(hyperparameters={"step_delay_s": 0.02})
    asked_at: list[float] = []

    def cancel() -> None:
        asked_at.append(time.monotonic())
        env.jobs.cancel(job.id, caller=ACME)

    canceller = _when(lambda: len(_steps(env, job.id)) >= 5, cancel)
    _run_next(env.worker())
    stopped_s = time.monotonic() - asked_at[0]
    canceller.join()

    cancelled = env.jobs.get(job.id, caller=ACME)
    assert cancelled.status is JobStatus.CANCELLED
    assert stopped_s < 2.0  # should_stop reads the flag at most every 0.5 s
    (newest, *_) = env.jobs.checkpoints(job.id, caller=ACME).items
    assert newest.step == max(_steps(env, job.id))  # saved where it stopped
    last = env.jobs.events(job.id, caller=ACME, limit=1).items[0]
    assert last.message == f"Job cancelled; checkpoint {newest.id} (step {newest.step}) is kept"


def test_a_failing_recipe_fails_the_job_with_one_line_and_logs_its_traceback(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    job = env.create(hyperparameters={"fail_at_step": 4})
    with caplog.at_level(logging.ERROR, logger="openmaas.jobs.worker"):
        _run_next(env.worker())

    failed = env.jobs.get(job.id, caller=ACME)
    assert failed.status is JobStatus.FAILED
    assert failed.error == {
        "code": "training_failed",
        "message": "RuntimeError: boom at step 4",
        "param": None,
    }
    # The tenant reads one line; the traceback is in the worker's log only.
    events = env.jobs.events(job.id, caller=ACME, order="asc", limit=100).items
    assert events[-1].message == "Job failed: RuntimeError: boom at step 4"
    assert not any("Traceback" in e.message or (e.data and "traceback" in e.data) for e in events)
    logged = next(r for r in caplog.records if job.id in r.getMessage())
    assert logged.exc_info is not None
    assert "boom at step 4" in str(logged.exc_info[1])


def test_a_worker_whose_job_was_taken_drops_it_without_touching_it(env: Env) -> None:
    job = env.create(hyperparameters={"step_delay_s": 0.02})
    worker = env.worker("slow")
    taker = _when(
        lambda: len(_steps(env, job.id)) >= 4,
        lambda: env.jobs.queue.reclaim_worker("test:slow", "worker slow missed its heartbeats"),
    )
    _run_next(worker)
    taker.join()

    taken = env.jobs.get(job.id, caller=ACME)
    assert (taken.status, taken.attempts, taken.worker_id) == (JobStatus.QUEUED, 1, None)
    assert taken.error is None
