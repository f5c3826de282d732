"""A training job with `resources`, run on Ray Train from the job's own worker process.

The worker process that claimed the job stays its owner: it heartbeats as for any job,
connects to the cluster (OPENMAAS_RAY_ADDRESS) as a Ray driver, and runs a `TorchTrainer`
with `num_workers` workers of `cpus_per_worker`/`gpus_per_worker` each
(`scaleout.train_worker` is what they run). While they train it drains their `JobLink`:
messages and per-epoch metrics become the job's events, each checkpoint rank 0 wrote is
stored through the job context (the artifact store, like any job's), and a cancel or a
stopping worker is passed on as a stop, after which rank 0's last checkpoint is stored and
the job stops as a local one does. A job that comes back resumes from its newest checkpoint
on whatever workers Ray gives it. The trained model's files come back from rank 0 and are
published as one worker's would be.

Example::

    output = run_on_ray_train(kind, context)  # what TrainingJobKind.run does with resources
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ray

from openmaas.errors import InvalidRequest, OpenMaaSError
from openmaas.jobs.context import JobContext, JobStopped
from openmaas.jobs.publish import JobOutput
from openmaas.observability.tracing import exporting_to, inject_context
from openmaas.scaleout.train_worker import (
    JobLink,
    TrainPayload,
    read_files,
    train_worker_loop,
    write_files,
)
from openmaas.training.requests import split_examples
from openmaas.training.runner import estimate_total_steps, job_output

if TYPE_CHECKING:
    from openmaas.training.kind import TrainingJobKind

DRAIN_S = 0.25  # how often the job's process relays the workers' events


def connect(address: str) -> None:
    """This process as a driver of the cluster at `address` (once per process)."""
    if not ray.is_initialized():
        ray.init(
            address=address,
            namespace="openmaas",
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=False,
        )


def check_fits(resources: Mapping[str, Any], workers: int) -> None:
    """400 naming `resources` when the whole cluster has too few CPUs or GPUs: Ray would
    otherwise wait for them forever."""
    have: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    for unit, per in (("CPU", resources["cpus_per_worker"]), ("GPU", resources["gpus_per_worker"])):
        wanted = float(per) * workers
        if wanted > float(have.get(unit, 0.0)) + 1e-9:
            raise InvalidRequest(
                f"the job asks for {workers} workers x {float(per):g} {unit}s and the Ray "
                f"cluster has {float(have.get(unit, 0.0)):g} {unit}s in all; ask for fewer",
                param="resources",
            )


def run_on_ray_train(kind: TrainingJobKind, context: JobContext) -> JobOutput:
    """Train the job on Ray Train workers and publish rank 0's model."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    job = context.job
    resources = dict(job.options["resources"])
    recipe = kind.recipe(job.recipe)
    if not recipe.data_parallel:
        raise InvalidRequest(
            f"recipe {recipe.name!r} does not train on several workers", param="resources"
        )
    if kind.ray_address is None:
        raise OpenMaaSError(
            f"job {job.id} asks for Ray Train workers and worker {context.worker_id} has no "
            "Ray cluster (OPENMAAS_RAY_ADDRESS)"
        )
    workers = int(resources["num_workers"])
    connect(kind.ray_address)
    check_fits(resources, workers)
    train, validation, test = split_examples(kind.datasets, job)
    restored = context.restore_checkpoint(context.scratch / "work" / "resume")
    context.plan_steps(estimate_total_steps(job.hyperparameters, len(train)))
    payload = TrainPayload(
        job_id=job.id,
        task=job.task,
        recipe=recipe,
        train=list(train),
        validation=list(validation),
        test=list(test),
        hyperparameters=dict(job.hyperparameters),
        seed=job.seed,
        cpus_per_worker=float(resources["cpus_per_worker"]),
        resume_files=read_files(restored.directory) if restored is not None else {},
        resume_step=restored.checkpoint.step if restored is not None else 0,
        resume_epoch=restored.checkpoint.epoch if restored is not None else 0,
        resume_metrics=dict(restored.checkpoint.metrics) if restored is not None else {},
        traces_endpoint=exporting_to(),
        trace=inject_context(),  # the job's span: each rank's continues its trace
    )
    gpus = float(resources["gpus_per_worker"])
    per_worker = {"CPU": float(resources["cpus_per_worker"]), **({"GPU": gpus} if gpus else {})}
    link = JobLink.remote()  # type: ignore[attr-defined]
    storage = context.scratch / "ray"
    trainer = TorchTrainer(
        train_worker_loop,
        train_loop_config={"payload": ray.put(payload), "link": link},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker
        ),
        # Checkpoints go to the artifact store through the link, not Ray's storage; a failed
        # worker fails the run, and the job's own retries resume it from its checkpoint.
        run_config=RunConfig(
            name=f"{job.id}-{job.attempts}",
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    each = f"{float(resources['cpus_per_worker']):g} CPU" + (f", {gpus:g} GPU" if gpus else "")
    context.message(f"Training on Ray Train: {workers} workers x {each}")
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except Exception as exc:  # relayed to the job's thread, which fails the job
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name=f"ray-train-{job.id}", daemon=True)
    thread.start()
    relay = _Relay(context)
    try:
        while thread.is_alive():
            thread.join(DRAIN_S)
            if context.should_stop() and not relay.stop_sent:
                link.request_stop.remote()
                relay.stop_sent = True
            relay.handle(ray.get(link.drain.remote()))
        relay.handle(ray.get(link.drain.remote()))
    finally:
        ray.kill(link)
        shutil.rmtree(storage, ignore_errors=True)
    if relay.stopped is not None:
        raise JobStopped(relay.stopped)
    if "error" in outcome or relay.result is None:
        error = outcome.get("error") or getattr(outcome.get("result"), "error", None)
        raise OpenMaaSError(f"Ray Train run failed: {_first_line(error)}")
    result, files, where = relay.result
    output_dir = context.scratch / "output"
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    write_files(files, output_dir)
    context.message(f"Trained on {workers} Ray Train workers; rank 0 on node {where['node_id']}")
    return job_output(job, result, output_dir, extra={"resources": {**resources, **where}})


class _Relay:
    """The link's events, as the job records them."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.stop_sent = False
        self.stopped: str | None = None
        self.result: tuple[Any, dict[str, bytes], dict[str, Any]] | None = None

    def handle(self, events: list[tuple[str, Any]]) -> None:
        context = self.context
        for kind, value in events:
            if kind == "message":
                level, text = value
                context.message(text, level)
            elif kind == "metrics":
                context.report_metrics(*value)
            elif kind == "plan":
                context.plan_steps(value)
            elif kind == "checkpoint":
                files, step, epoch, metrics = value
                directory = context.scratch / "work" / "checkpoint"
                shutil.rmtree(directory, ignore_errors=True)
                directory.mkdir(parents=True)
                write_files(files, directory)
                context.save_checkpoint(directory, step, epoch, metrics)
            elif kind == "stopped":
                self.stopped = str(value)
            elif kind == "result":
                self.result = value


def _first_line(error: object) -> str:
    text = str(error or "no result from rank 0").strip()
    return text.splitlines()[0] if text else type(error).__name__
