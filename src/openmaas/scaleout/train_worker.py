"""What each Ray Train worker runs for a data-parallel training job, and the link back to the
job's worker process.

Every rank runs the job's recipe whole on its own temp directory, as one worker would, with
`TrainingContext.rank`/`world_size` set: the shared loop gives each rank its part of every
batch and the network is wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPU), so
the ranks' averaged gradients are the whole batch's and their weights stay equal. Every rank
validates on the whole validation split, so they take the same early-stopping decisions
without talking. Rank 0 relays what the job records — messages, per-epoch metrics, its
checkpoints' files, the trained model's files — to the `JobLink` actor, which the job's
worker process drains. A stop (cancel, or the worker stopping) is read from the link by rank
0 and agreed by every rank at the same step (an all-reduce), since a rank that stopped alone
would leave the others waiting in theirs.

Example::

    trainer = TorchTrainer(train_worker_loop, train_loop_config={"payload": ref, "link": link},
                           scaling_config=ScalingConfig(num_workers=2))
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from opentelemetry.trace import Span

from openmaas.observability.tracing import remote_span
from openmaas.training.recipe import (
    Checkpoint,
    Example,
    Recipe,
    TrainingContext,
    TrainingResult,
    TrainingStopped,
)

STOP_POLL_S = 0.5  # rank 0 asks the link whether to stop at most this often
SERVICE = "openmaas-train-worker"  # the ranks' spans' service name

Files = dict[str, bytes]  # a directory's files by relative path
MetricsCallback = Callable[[int, int, Mapping[str, float]], None]


@dataclass(frozen=True, slots=True)
class TrainPayload:
    """Everything a rank needs to train the job (put once in the object store)."""

    job_id: str
    task: str
    recipe: Recipe
    train: Sequence[Example]
    validation: Sequence[Example]
    test: Sequence[Example]
    hyperparameters: Mapping[str, Any]
    seed: int
    cpus_per_worker: float
    resume_files: Files = field(default_factory=dict)
    resume_step: int = 0
    resume_epoch: int = 0
    resume_metrics: Mapping[str, float] = field(default_factory=dict)
    # The job's trace: each rank's span continues it, exported to the driver's collector.
    traces_endpoint: str | None = None
    trace: Mapping[str, str] = field(default_factory=dict)


@ray.remote(num_cpus=0)
class JobLink:
    """The mailbox between the ranks and the job's worker process: events out, stop in."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.stop = False

    def push(self, kind: str, value: Any) -> bool:
        self.events.append((kind, value))
        return self.stop

    def drain(self) -> list[tuple[str, Any]]:
        events, self.events = self.events, []
        return events

    def request_stop(self) -> None:
        self.stop = True

    def should_stop(self) -> bool:
        return self.stop


def read_files(directory: Path) -> Files:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def write_files(files: Mapping[str, bytes], directory: Path) -> None:
    for rel, data in files.items():
        target = directory / rel
        if directory.resolve() not in target.resolve().parents:
            raise ValueError(f"file {rel!r} would land outside {directory}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class AgreedStop:
    """`should_stop` for a rank: rank 0 reads the link now and then, every rank takes the
    maximum of the ranks' answers (all call it at the same points of the loop)."""

    def __init__(self, link: Any, rank: int, world_size: int, device: Any) -> None:
        self.link = link
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.asked = False
        self.checked_at = 0.0

    def __call__(self) -> bool:
        import torch
        import torch.distributed as dist

        if self.rank == 0 and time.monotonic() - self.checked_at >= STOP_POLL_S:
            self.checked_at = time.monotonic()
            self.asked = bool(ray.get(self.link.should_stop.remote()))
        if self.world_size == 1:
            return self.asked
        flag = torch.tensor([1.0 if self.asked else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def train_worker_loop(config: Mapping[str, Any]) -> None:
    """One rank's run of the job (Ray Train's train loop)."""
    import ray.train
    import ray.train.torch
    import torch
    from torch.nn.parallel import DistributedDataParallel

    payload: TrainPayload = ray.get(config["payload"])
    link = config["link"]
    train_context = ray.train.get_context()
    rank, world_size = train_context.get_world_rank(), train_context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(payload.cpus_per_worker)))
    leader = rank == 0

    def relay(kind: str, value: Any) -> None:
        if leader:
            link.push.remote(kind, value)

    def wrap(network: Any) -> Any:
        if world_size == 1:
            return network
        ids = [device.index] if device.type == "cuda" else None
        # Buffers are not broadcast: no rank-to-rank traffic in a forward pass, so the
        # ranks may evaluate (no grad) without waiting on each other.
        return DistributedDataParallel(network, device_ids=ids, broadcast_buffers=False)

    def checkpoint(directory: Path, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        if leader:
            relay("checkpoint", (read_files(directory), step, epoch, dict(metrics)))

    with (
        _rank_span(payload, rank, world_size) as span,
        tempfile.TemporaryDirectory(prefix="openmaas-train-") as tmp,
    ):
        root = Path(tmp)
        output, work = root / "output", root / "work"
        output.mkdir()
        work.mkdir()
        resume = None
        if payload.resume_files:
            write_files(payload.resume_files, root / "resume")
            resume = Checkpoint(
                directory=root / "resume",
                step=payload.resume_step,
                epoch=payload.resume_epoch,
                metrics=payload.resume_metrics,
            )
        ctx = TrainingContext(
            job_id=payload.job_id,
            task=payload.task,
            train=payload.train,
            validation=payload.validation,
            test=payload.test,
            hyperparameters=dict(payload.hyperparameters),
            seed=payload.seed,
            output_dir=output,
            work_dir=work,
            device=str(device),
            resume_from=resume,
            on_message=lambda level, text: relay("message", (level, text)),
            on_metrics=_marking_epochs(
                span, lambda step, epoch, m: relay("metrics", (step, epoch, dict(m)))
            ),
            on_checkpoint=checkpoint,
            should_stop=AgreedStop(link, rank, world_size, device),
            on_plan=lambda total: relay("plan", total),
            rank=rank,
            world_size=world_size,
            wrap_network=wrap,
        )
        try:
            result: TrainingResult = payload.recipe.train(ctx)
        except TrainingStopped as exc:
            span.add_event("stopped", {"reason": str(exc)})
            if leader:
                ray.get(link.push.remote("stopped", str(exc)))
            return
        if leader:
            where = {
                "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid(),
                "world_size": world_size,
            }
            # Waited for: the model's files are in the link before the run counts as done.
            ray.get(link.push.remote("result", (result, read_files(output), where)))


def _rank_span(payload: TrainPayload, rank: int, world_size: int) -> AbstractContextManager[Span]:
    """This rank's span (`openmaas.train.rank`) in the job's trace."""
    attributes = {
        "openmaas.job.id": payload.job_id,
        "openmaas.rank": rank,
        "openmaas.world_size": world_size,
        "openmaas.node": ray.get_runtime_context().get_node_id(),
    }
    return remote_span(
        "openmaas.train.rank",
        payload.traces_endpoint,
        payload.trace,
        attributes,
        service=SERVICE,
    )


def _marking_epochs(span: Span, on_metrics: MetricsCallback) -> MetricsCallback:
    """`on_metrics`, marking each epoch's validation metrics as an event on the rank's span."""
    if not span.is_recording():
        return on_metrics

    def marked(step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        if any(name.startswith("val_") for name in metrics):
            span.add_event(f"epoch {epoch}", {"step": step, **dict(metrics)})
        on_metrics(step, epoch, metrics)

    return marked
