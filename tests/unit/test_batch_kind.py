"""The batch kind's run, with the job system, the store and the files real and the serving
path replaced by a scripted `LineExecutor` (the real one, the app's in-process dispatch, is
run by tests/integration/test_batches.py): retryable 429s are sent again and other answers
stand, an answered line is never sent again when the batch resumes, the lines left when the
window ends are given up, and a revoked key fails the batch."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.service import AuthService
from openmaas.batches.entities import BATCH, LineAnswer
from openmaas.batches.kind import BatchJobKind
from openmaas.batches.requests import BatchRequest
from openmaas.batches.service import BatchService
from openmaas.batches.store import BatchStore, Result
from openmaas.datasets.service import DatasetService
from openmaas.jobs.entities import JobStatus
from openmaas.jobs.service import JobService
from openmaas.jobs.worker import Worker
from openmaas.registry.composition import Registry
from tests.conftest import build_registry

URL = "/v1/classify"


@dataclass
class ScriptedExecutor:
    """Answers each request at once: the scripted answers of its custom_id's text, in turn
    (the last one repeats), else 200 echoing the body; records who sent what."""

    script: dict[str, list[LineAnswer]] = field(default_factory=dict)
    sent: list[tuple[str, Principal]] = field(default_factory=list)

    def submit(
        self, url: str, body: Mapping[str, Any], *, caller: Principal, request_id: str
    ) -> Future[LineAnswer]:
        key = str(body["input"])
        self.sent.append((key, caller))
        answers = self.script.get(key)
        answer = (
            (answers.pop(0) if len(answers) > 1 else answers[0])
            if answers
            else LineAnswer(200, {"echo": dict(body)}, request_id)
        )
        future: Future[LineAnswer] = Future()
        future.set_result(answer)
        return future


@dataclass
class Env:
    batches: BatchService
    jobs: JobService
    kind: BatchJobKind
    datasets: DatasetService
    auth: AuthService
    registry: Registry
    home: Path
    caller: Principal
    key_id: int

    def create(self, *inputs: str) -> str:
        lines = [
            {"custom_id": f"id-{i}", "method": "POST", "url": URL, "body": {"input": value}}
            for i, value in enumerate(inputs)
        ]
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        stored = self.datasets.create_file(
            io.BytesIO(content),
            filename="requests.jsonl",
            project="acme",
            caller=self.caller,
            purpose="batch",
        )
        batch = self.batches.create(BatchRequest(stored.id, URL), caller=self.caller)
        assert batch.status == "in_progress", batch
        return batch.id

    def run(self, executor: ScriptedExecutor) -> None:
        """One worker claims the batch and runs it to its end."""
        self.kind.executor = executor
        job = self.jobs.queue.claim("test:batch", {BATCH})
        assert job is not None
        Worker(
            worker_id="test:batch",
            queue=self.jobs.queue,
            kinds=[self.kind],
            registry=self.registry,
            home=self.home,
            heartbeat_s=0.1,
            in_process=True,
        ).run_job(job)

    def lines(self, file_id: str | None) -> dict[str, dict[str, Any]]:
        assert file_id is not None
        content = b"".join(self.datasets.content(file_id, caller=SYSTEM))
        return {
            line["custom_id"]: line
            for line in (json.loads(raw) for raw in content.decode().splitlines())
        }


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    registry = build_registry(f"sqlite:///{tmp_path / 'openmaas.db'}", tmp_path / "artifacts")
    db = registry.db
    auth = AuthService(db, pepper=b"p" * 32)
    auth.create_project("acme", caller=SYSTEM)
    key, _ = auth.create_key("acme", "batcher", ["inference"], caller=SYSTEM)
    caller = auth.principal_of_key(key.id, caller=SYSTEM)
    datasets = DatasetService(db, registry.artifacts)
    datasets.start()
    store = BatchStore(db)
    kind = BatchJobKind(datasets=datasets, store=store, keys=auth, concurrency=2)
    jobs = JobService(db, kinds=[kind])
    yield Env(
        BatchService(jobs, store),
        jobs,
        kind,
        datasets,
        auth,
        registry,
        tmp_path / "home",
        caller,
        key.id,
    )
    db.close()


def test_retryable_429s_are_sent_again_and_other_answers_stand(env: Env) -> None:
    limited = LineAnswer(
        429, {"error": {"code": "rate_limit_exceeded"}}, None, {"retry-after": "0"}
    )
    quota = LineAnswer(
        429,
        {"error": {"code": "quota_exceeded"}},
        None,
        {"retry-after": "9", "x-should-retry": "false"},
    )
    missing = LineAnswer(404, {"error": {"code": "model_not_found"}})
    answered = LineAnswer(200, {"echo": {"input": "limited"}})
    executor = ScriptedExecutor(
        {"limited": [limited, limited, answered], "quota": [quota], "missing": [missing]}
    )
    batch_id = env.create("fine", "limited", "quota", "missing")
    env.run(executor)

    batch = env.batches.get(batch_id, caller=env.caller)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    # The rate-limited line went three times (two 429s, then its answer); the others once.
    assert [key for key, _ in executor.sent].count("limited") == 3
    assert [key for key, _ in executor.sent].count("quota") == 1
    # Every request ran as the key that created the batch.
    assert {who.key_id for _, who in executor.sent} == {env.key_id}
    output, errors = env.lines(batch.output_file_id), env.lines(batch.error_file_id)
    assert set(output) == {"id-0", "id-1"}
    assert output["id-1"]["response"]["body"] == {"echo": {"input": "limited"}}
    assert {k: v["response"]["status_code"] for k, v in errors.items()} == {
        "id-2": 429,
        "id-3": 404,
    }


def test_a_resumed_batch_sends_only_the_lines_without_an_answer(env: Env) -> None:
    batch_id = env.create("a", "b", "c", "d")
    # As if a first run had answered two lines before its worker was lost.
    first = ScriptedExecutor()
    env.kind.store.record(
        batch_id,
        [
            Result(1, "batch_req_1", "id-0", 200, "r1", {"echo": "earlier"}),
            Result(3, "batch_req_3", "id-2", 200, "r3", {"echo": "earlier"}),
        ],
    )
    env.run(first)
    assert sorted(key for key, _ in first.sent) == ["b", "d"]
    batch = env.batches.get(batch_id, caller=env.caller)
    assert (batch.status, batch.request_counts.completed) == ("completed", 4)
    output = env.lines(batch.output_file_id)
    assert output["id-0"]["response"]["body"] == {"echo": "earlier"}
    assert list(output) == ["id-0", "id-1", "id-2", "id-3"]  # input order


def test_lines_left_when_the_window_ends_are_given_up(env: Env) -> None:
    batch_id = env.create("a", "b")
    with env.jobs.db.transaction() as session:
        session.execute(
            text("UPDATE training_jobs SET created_at = '2000-01-01 00:00:00' WHERE id = :id"),
            {"id": batch_id},
        )
    executor = ScriptedExecutor()
    env.run(executor)
    assert executor.sent == []
    batch = env.batches.get(batch_id, caller=env.caller)
    assert batch.status == "expired"
    assert batch.expired_at is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
    assert batch.output_file_id is None
    errors = env.lines(batch.error_file_id)
    assert {line["error"]["code"] for line in errors.values()} == {"batch_expired"}
    assert {line["response"] is None for line in errors.values()} == {True}


def test_a_batch_whose_key_was_revoked_fails(env: Env) -> None:
    batch_id = env.create("a")
    env.auth.revoke_key(env.key_id, caller=SYSTEM)
    executor = ScriptedExecutor()
    env.run(executor)
    assert executor.sent == []
    batch = env.batches.get(batch_id, caller=SYSTEM)
    assert batch.status == "failed"
    assert batch.errors[0]["code"] == "batch_failed"
    assert "revoked" in batch.errors[0]["message"]
    assert env.jobs.get(batch_id, caller=SYSTEM).status is JobStatus.FAILED
