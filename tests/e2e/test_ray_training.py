"""Training and search on a real two-node Ray cluster, through a real server and its worker.

The cluster (`tests.ray_cluster`: a head and a second node, one CPU each) is the server's
OPENMAAS_RAY_ADDRESS. A TextCNN job with `num_workers: 2` trains on two Ray Train workers
(DistributedDataParallel over gloo), reports per-epoch metrics and stores checkpoints as any
job does, and its model serves, scoring within a point of the one-worker job on the same
reviews and seed; a search job runs its trials as Ray Tune trials, each recorded with the
Ray node and process it ran in (not the server's); bad resources are 400s naming the field.
Each rank and each trial sends its span, in the job's trace, to the collector the server
names (a real OTLP receiver here). A job whose worker is SIGKILLed resumes on Ray from its
newest checkpoint (training) or its stored study (search).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import tests.integration.conftest as server_module
import tests.ray_cluster as ray_cluster_module
from openmaas import Client
from openmaas.protocol.training import TrainingJobOut
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.textcnn import TextCNNRecipe
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import PYTHONPATH, start_job_server
from tests.integration.waiting import wait_for
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.ray_cluster import RayCluster, ray_cluster
from tests.sentiment_data import jsonl, reviews


class SerialTextCNN(TextCNNRecipe):
    """textcnn, said not to split its batches: a recipe resources are refused for."""

    name = "serial_textcnn"
    data_parallel = False


class SlowRayTextCNN(TextCNNRecipe):
    """textcnn with every step delayed by `step_delay_s`: time to cancel it midway."""

    name = "slow_ray_textcnn"

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


# A small TextCNN that learns the reviews in a few epochs.
TINY = {"embedding_dim": 32, "n_filters": 16, "n_epochs": 4, "batch_size": 16}
SEED = 11


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    # The nodes' worker processes import openmaas (and these tests' recipes) from this tree.
    # A loaded machine starts a node slowly: give its raylet, and the agents the raylet
    # waits for, longer than Ray's defaults (30 s and about 15 s).
    wanted = {
        "PYTHONPATH": PYTHONPATH,
        "RAY_raylet_start_wait_time_s": "120",
        "RAY_agent_register_timeout_ms": "120000",
    }
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    timeout_s = ray_cluster_module._START_TIMEOUT_S
    ray_cluster_module._START_TIMEOUT_S = max(timeout_s, 240.0)  # the shared machine is busy
    try:
        # Two logical CPUs a node: a job's Ray Train workers may still hold theirs for a
        # while after it ends, and the next job's two workers must not wait on them.
        with ray_cluster(head_cpus=2, worker_cpus=2) as started:
            yield started
    finally:
        ray_cluster_module._START_TIMEOUT_S = timeout_s
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, cluster: RayCluster, receiver: OtlpReceiver
) -> Iterator[RunningServer]:
    timeout_s = server_module.STARTUP_TIMEOUT_S
    server_module.STARTUP_TIMEOUT_S = max(timeout_s, 180.0)  # beside a busy Ray cluster
    try:
        running = start_job_server(
            tmp_path_factory,
            "ray",
            {
                "OPENMAAS_RAY_ADDRESS": cluster.address,
                "OPENMAAS_EXTRA_RECIPES": f"{__name__}:SerialTextCNN,{__name__}:SlowRayTextCNN",
                "OPENMAAS_OTEL_ENDPOINT": receiver.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            },
        )
    finally:
        server_module.STARTUP_TIMEOUT_S = timeout_s
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def file_id(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("reviews") / "reviews.jsonl"
    path.write_bytes(jsonl(reviews(600, seed=5)))
    return sdk.upload_dataset(path).id


def finished(sdk: Client, job_id: str, timeout_s: float = 240.0) -> TrainingJobOut:
    return wait_for(
        f"job {job_id} to finish",
        lambda: job if (job := sdk.get_training_job(job_id)).finished else None,
        timeout_s,
    )


def events(sdk: Client, job_id: str) -> list[Any]:
    return list(sdk.training_job_events(job_id, limit=1000).data)


def job_spans(receiver: OtlpReceiver, job_id: str, name: str, count: int) -> list[ReceivedSpan]:
    """The `count` spans called `name` in the trace of job `job_id`'s run (the job worker's
    `openmaas.job` span), once the collector has them all."""

    def run_span() -> ReceivedSpan | None:
        runs = [s for s in receiver.received() if s.name == "openmaas.job"]
        return next((s for s in runs if s.attributes.get("openmaas.job.id") == job_id), None)

    run = wait_for(f"job {job_id}'s span", run_span, 60)
    spans = receiver.wait_for(
        lambda found: len([s for s in found if s.name == name]) >= count, run.trace_id, 60
    )
    by_id = {span.span_id: span for span in spans}
    named = [span for span in spans if span.name == name]
    for span in named:  # under the job's run, sent by a Ray worker process
        assert span.service == "openmaas-train-worker", span
        chain = [span]
        while chain[-1].parent_span_id in by_id and chain[-1] is not run:
            chain.append(by_id[chain[-1].parent_span_id])
        assert run in chain, (span, run)
    return named


def post_job(server: RunningServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/training/jobs", headers=server.headers, json=body, timeout=60
    )


def test_two_ray_train_workers_train_as_well_as_one_and_the_model_serves(
    server: RunningServer, sdk: Client, file_id: str, receiver: OtlpReceiver
) -> None:
    # Without dropout the two runs differ only in the order of floating-point sums: the
    # same initial weights, batches, augmentation and (averaged) gradients.
    same = {"hyperparameters": {**TINY, "dropout": 0.0}, "seed": SEED, "test_split": 0.2}
    one = sdk.create_training_job("textcnn", file_id, **same)
    two = sdk.create_training_job("textcnn", file_id, resources={"num_workers": 2}, **same)
    assert two.resources == {"num_workers": 2, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}
    assert one.resources is None
    local, distributed = finished(sdk, one.id), finished(sdk, two.id)
    assert local.status == "succeeded", local.error
    assert distributed.status == "succeeded", distributed.error
    # The same data, split and seed: within a point of accuracy of each other.
    print(
        f"test accuracy: one worker {local.metrics['accuracy']:.4f}, "
        f"two Ray Train workers {distributed.metrics['accuracy']:.4f}"
    )
    assert abs(local.metrics["accuracy"] - distributed.metrics["accuracy"]) <= 0.01
    assert distributed.metrics["accuracy"] >= 0.8

    events = sdk.training_job_events(distributed.id, limit=1000).data
    messages = [event.message for event in events]
    assert "Training on Ray Train: 2 workers x 1 CPU" in messages, messages
    epochs = {
        event.data["epoch"]
        for event in events
        if event.type == "metrics" and event.data and "val_accuracy" in event.data
    }
    assert epochs == set(range(1, TINY["n_epochs"] + 1))  # relayed from rank 0, per epoch
    assert sdk.training_job_checkpoints(distributed.id).data, "no checkpoint stored"
    # Each rank's span continues the job's trace, with an event per epoch.
    ranks = job_spans(receiver, distributed.id, "openmaas.train.rank", 2)
    assert sorted(int(str(span.attributes["openmaas.rank"])) for span in ranks) == [0, 1]
    for span in ranks:
        assert span.attributes["openmaas.world_size"] == 2
        assert [e for e in span.events if e.startswith("epoch ")] == [
            f"epoch {n}" for n in range(1, TINY["n_epochs"] + 1)
        ]

    assert distributed.fine_tuned_model is not None
    version = sdk.resolve(distributed.fine_tuned_model)
    where = version.params["training"]["resources"]
    assert where["world_size"] == 2
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": distributed.fine_tuned_model, "input": ["a superb film", "a dull plot"]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert [row["labels"][0]["label"] for row in answer.json()["data"]] == [
        "positive",
        "negative",
    ]


def test_a_cancel_reaches_the_ray_train_workers_and_keeps_their_checkpoint(
    sdk: Client, file_id: str
) -> None:
    slow = {**TINY, "n_epochs": 40, "step_delay_s": 0.05, "checkpoint_every_steps": 10}
    job = sdk.create_training_job(
        "slow_ray_textcnn", file_id, hyperparameters=slow, resources={"num_workers": 2}
    )
    wait_for(
        "a first checkpoint from rank 0",
        lambda: sdk.training_job_checkpoints(job.id).data or None,
        180,
    )
    asked_at = time.monotonic()
    sdk.cancel_training_job(job.id)
    done = finished(sdk, job.id, timeout_s=60)
    stop_s = time.monotonic() - asked_at
    print(f"cancel to cancelled on 2 Ray Train workers: {stop_s:.1f} s")
    assert done.status == "cancelled"
    assert stop_s < 30
    checkpoints = sdk.training_job_checkpoints(job.id).data
    assert checkpoints
    assert checkpoints[0].step < 40 * 30  # stopped well before its last step


@pytest.mark.parametrize(
    ("resources", "param"),
    [
        ({"num_workers": 0}, "resources.num_workers"),
        ({"num_workers": "two"}, "resources.num_workers"),
        ({"cpus_per_worker": 0}, "resources.cpus_per_worker"),
        ({"gpus_per_worker": -1}, "resources.gpus_per_worker"),
        ({"num_workers": 2, "memory": 3}, "resources.memory"),
    ],
)
def test_bad_resources_are_400s_naming_the_field(
    server: RunningServer, file_id: str, resources: dict[str, Any], param: str
) -> None:
    body = {"recipe": "textcnn", "training_file": file_id, "resources": resources}
    answer = post_job(server, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_recipe_that_does_not_split_its_batches_is_refused_resources(
    server: RunningServer, file_id: str
) -> None:
    body = {"recipe": "serial_textcnn", "training_file": file_id, "resources": {"num_workers": 2}}
    answer = post_job(server, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "resources"
    assert "textcnn, bilstm, gru, transformer_encoder" in error["message"]


def test_more_workers_than_the_cluster_holds_fails_the_job_naming_resources(
    sdk: Client, file_id: str
) -> None:
    job = sdk.create_training_job(
        "textcnn", file_id, hyperparameters=TINY, resources={"num_workers": 5}
    )
    done = finished(sdk, job.id, timeout_s=120)
    assert done.status == "failed"
    assert done.error is not None
    assert "5 workers x 1 CPUs and the Ray cluster has 4 CPUs" in done.error["message"]


def test_a_search_runs_its_trials_on_ray_tune_workers(
    server: RunningServer, sdk: Client, file_id: str, receiver: OtlpReceiver
) -> None:
    job = sdk.create_search_job(
        "textcnn",
        file_id,
        n_trials=4,
        startup_trials=2,
        space={
            "learning_rate": {"type": "float", "low": 1e-3, "high": 1.5, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        },
        hyperparameters=TINY,
        seed=SEED,
    )
    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    messages = [event.message for event in sdk.training_job_events(done.id, limit=1000).data]
    assert any(m.startswith("Running 4 trials on Ray Tune, 4 at a time") for m in messages)

    trials = sdk.training_job_trials(done.id)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert {t.state for t in trials} <= {"complete", "pruned"}
    # Each ran in a Ray worker process: not the server's, not its job worker's.
    assert done.worker_id is not None
    owners = {server.process.pid, int(done.worker_id.split(":")[1])}
    for trial in trials:
        assert trial.worker is not None, trial
        assert trial.worker["pid"] not in owners
        assert len(trial.worker["node_id"]) == 56  # a Ray node id, hex
        assert trial.value is not None
    # The best trial is registered as a local search registers it, with the trials table.
    assert done.fine_tuned_model is not None
    version = sdk.resolve(done.fine_tuned_model)
    search = version.params["training"]["search"]
    assert len(search["trials"]) == 4
    best = max((t for t in trials if t.state == "complete"), key=lambda t: t.value or 0.0)
    assert search["best_trial"] == best.number
    # Each trial's span continues the job's trace, from the process the trial ran in.
    spans = job_spans(receiver, done.id, "openmaas.search.trial", 4)
    assert sorted(int(str(span.attributes["openmaas.trial"])) for span in spans) == [0, 1, 2, 3]
    pids = {trial.number: trial.worker["pid"] for trial in trials if trial.worker}
    for span in spans:
        assert span.attributes["pid"] == pids[int(str(span.attributes["openmaas.trial"]))]


# -- a worker killed mid-job ------------------------------------------------------------------


def kill_the_jobs_worker(sdk: Client, job_id: str) -> str:
    """SIGKILL the job worker process running the job (Ray's driver for it); its id."""
    running = sdk.get_training_job(job_id)
    assert running.status == "running", running
    assert running.worker_id is not None
    os.kill(int(running.worker_id.split(":")[-2]), signal.SIGKILL)  # host:pid:token
    return running.worker_id


def test_a_ray_train_job_whose_worker_is_killed_resumes_from_its_checkpoint(
    server: RunningServer, sdk: Client, file_id: str
) -> None:
    slow = {**TINY, "n_epochs": 6, "step_delay_s": 0.05, "checkpoint_every_steps": 10}
    job = sdk.create_training_job(
        "slow_ray_textcnn", file_id, hyperparameters=slow, resources={"num_workers": 2}, seed=SEED
    )
    first = wait_for(
        "a first checkpoint from rank 0",
        lambda: next(iter(sdk.training_job_checkpoints(job.id).data), None),
        180,
    )
    killed = kill_the_jobs_worker(sdk, job.id)
    resumed = wait_for(
        "the job to resume on Ray",
        lambda: next((e for e in events(sdk, job.id) if e.message.startswith("Resuming")), None),
        180,
    )
    done = finished(sdk, job.id, timeout_s=300)
    assert done.status == "succeeded", done.error
    assert done.attempts == 1  # one lost run
    assert done.worker_id not in (None, killed)
    history = events(sdk, job.id)
    messages = [e.message for e in history]
    assert any(f"worker {killed} was killed by SIGKILL" in m for m in messages), messages
    # Both runs trained on two Ray Train workers; the second from the newest checkpoint.
    assert messages.count("Training on Ray Train: 2 workers x 1 CPU") == 2, messages
    assert resumed.data is not None
    resumed_step = int(resumed.data["step"])
    assert resumed_step >= first.step
    after = [
        int(e.data["step"]) for e in history if e.type == "metrics" and e.id > resumed.id and e.data
    ]
    assert after
    assert after[0] > resumed_step  # steps continue from the checkpoint
    assert after == sorted(after)
    assert done.fine_tuned_model is not None
    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers=server.headers,
        json={"model": done.fine_tuned_model, "input": ["a superb film"]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def test_a_tune_search_whose_worker_is_killed_resumes_from_its_stored_study(
    sdk: Client, file_id: str
) -> None:
    job = sdk.create_search_job(
        "slow_ray_textcnn",
        file_id,
        n_trials=6,
        pruning=False,
        space={"learning_rate": {"type": "float", "low": 1e-3, "high": 1.5, "log": True}},
        hyperparameters={**TINY, "step_delay_s": 0.02},
        seed=SEED,
    )

    def two_complete() -> list[Any] | None:
        trials = sdk.training_job_trials(job.id)
        complete = [t for t in trials if t.state == "complete"]
        return complete if len(complete) >= 2 else None

    before = wait_for("two complete trials", two_complete, 240)
    killed = kill_the_jobs_worker(sdk, job.id)
    done = finished(sdk, job.id, timeout_s=300)
    assert done.status == "succeeded", done.error
    assert done.worker_id not in (None, killed)
    messages = [e.message for e in events(sdk, job.id)]
    resumed = [m for m in messages if m.startswith("Resuming the search from its stored study")]
    assert resumed, messages
    trials = {t.number: t for t in sdk.training_job_trials(done.id)}
    # The trials finished before the kill are kept as they were, not run again.
    for trial in before:
        assert trials[trial.number].state == "complete"
        assert trials[trial.number].value == trial.value
        assert trials[trial.number].params == trial.params
    assert len([t for t in trials.values() if t.state == "complete"]) >= 6
