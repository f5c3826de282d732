"""What the job tests share: a recipe reduced to the contract's mechanics (`CountingRecipe`:
steps, metrics, checkpoints, should_stop, an output directory, in milliseconds), and an
environment of a job service with the training kind, a registry and two projects' files,
on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import update

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.datasets.service import DatasetService
from openmaas.jobs.entities import Job
from openmaas.jobs.service import JobService
from openmaas.jobs.worker import Worker
from openmaas.registry.composition import Registry
from openmaas.store.database import Database
from openmaas.store.tables import JobRow
from openmaas.training.kind import TrainingJobKind
from openmaas.training.recipe import (
    Recipe,
    TrainingContext,
    TrainingResult,
    TrainingStopped,
)
from openmaas.training.requests import JobRequest
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
    training: TrainingJobKind
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
            queue=self.jobs.queue,
            kinds=[self.training],
            registry=self.registry,
            home=self.home,
            heartbeat_s=heartbeat_s,
            threads=threads,
        )

    def create(self, principal: Principal = ACME, **fields: Any) -> Job:
        fields.setdefault("recipe", "counting")
        fields.setdefault("training_file", self.train_file)
        return self.jobs.create("training", JobRequest(**fields), caller=principal)


def jsonl(rows: int, labels: tuple[str, ...] = ("pos", "neg")) -> bytes:
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


def make_env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    """The environment for a test module's `env` fixture (yields, then closes it)."""
    registry = build_registry(database_url, tmp_path / "artifacts")
    datasets = DatasetService(registry.db, registry.artifacts)
    recipe = CountingRecipe()
    training = TrainingJobKind(
        registry.db, registry=registry, datasets=datasets, recipes={recipe.name: recipe}
    )
    jobs = JobService(registry.db, kinds=[training], heartbeat_timeout_s=30.0, max_attempts=2)
    train = datasets.create(
        io.BytesIO(jsonl(40)), filename="train.jsonl", project="acme", caller=SYSTEM
    )
    other = datasets.create(
        io.BytesIO(jsonl(40)), filename="train.jsonl", project="other", caller=SYSTEM
    )
    yield Env(jobs, training, registry, datasets, recipe, tmp_path / "home", train.id, other.id)
    registry.db.close()


def age_heartbeat(db: Database, job_id: str, seconds: float) -> None:
    with db.transaction() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )
