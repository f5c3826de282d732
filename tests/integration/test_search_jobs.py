"""Hyperparameter search and k-fold cross-validation against a real server and worker.

A search job trains a tiny TextCNN several times on templated sentiment reviews, prunes
trials the median pruner finds behind, and registers its best trial with the trials table;
a search whose worker is SIGKILLed mid-trial resumes from its stored study; bad spaces are
400s naming the parameter; a cross-validated job reports every metric's mean and deviation.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import Client
from openmaas.protocol.training import TrainingJobOut, TrialOut
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.textcnn import TextCNNRecipe
from tests.integration.conftest import RunningServer, stop_server
from tests.integration.job_servers import blocks, run_script, start_job_server
from tests.integration.waiting import wait_for
from tests.sentiment_data import jsonl, reviews

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "search.md"


class SlowSearchTextCNN(TextCNNRecipe):
    """textcnn with every step delayed by `step_delay_s`: time to kill a trial midway."""

    name = "slow_search_textcnn"

    def defaults(self) -> dict[str, Any]:
        return {**super().defaults(), "step_delay_s": 0.0}

    def train(self, ctx: TrainingContext) -> TrainingResult:
        delay = float(ctx.hyperparameters.get("step_delay_s", 0.0))
        should_stop = ctx.should_stop

        def slowed() -> bool:
            time.sleep(delay)
            return should_stop()

        ctx.should_stop = slowed
        return super().train(ctx)


# A network that learns the reviews in a few epochs of a few hundred examples.
TINY = {"embedding_dim": 16, "n_filters": 8, "n_epochs": 4, "batch_size": 16}
# Learning rates from useless (1e-5: nothing learnt in 4 epochs) to good: the median
# pruner has something to cut.
SPACE = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_job_server(
        tmp_path_factory,
        "search",
        {
            # A killed worker's jobs are taken back as its supervisor sees it exit.
            "OPENMAAS_JOB_HEARTBEAT_TIMEOUT_S": "30",
            "OPENMAAS_EXTRA_RECIPES": f"{__name__}:SlowSearchTextCNN",
        },
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def file_id(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("reviews") / "reviews.jsonl"
    path.write_bytes(jsonl(reviews(240, seed=3)))
    return sdk.upload_dataset(path).id


def finished(sdk: Client, job_id: str, timeout_s: float = 120.0) -> TrainingJobOut:
    return wait_for(
        f"job {job_id} to finish",
        lambda: job if (job := sdk.get_training_job(job_id)).finished else None,
        timeout_s,
    )


def test_the_docs_search_from_the_cli_prunes_trials_and_registers_its_best(
    server: RunningServer, sdk: Client, tmp_path: Path
) -> None:
    text = DOCS.read_text(encoding="utf-8")
    [script] = blocks(text, "console")
    space = json.loads(blocks(text, "json")[0])
    assert space == SPACE
    (tmp_path / "space.json").write_text(json.dumps(space), encoding="utf-8")
    (tmp_path / "reviews.jsonl").write_bytes(jsonl(reviews(240, seed=3)))
    ran = run_script(server, script, tmp_path)
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}"
    found = re.search(r"search (ftjob-\w+)", ran.stderr)
    assert found is not None, ran.stderr
    job = sdk.get_training_job(found.group(1))
    assert job.kind == "search"
    assert job.search is not None
    assert job.search["metric"] == "val_macro_f1"
    assert job.status == "succeeded", job.error
    # The CLI's table of trials, one row each, then the job.
    assert "learning_rate" in ran.stdout
    assert "val_macro_f1" in ran.stdout
    assert "6/6 trials" in ran.stdout

    trials = sdk.training_job_trials(job.id)
    assert [t.number for t in trials] == list(range(6))
    states = [t.state for t in trials]
    assert set(states) <= {"complete", "pruned"}
    assert "pruned" in states, states  # the median pruner stopped at least one trial early
    for trial in trials:
        assert set(trial.params) == {"learning_rate", "dropout"}
        assert 1e-5 <= trial.params["learning_rate"] <= 3e-2
        assert trial.duration_s is not None
        assert trial.duration_s > 0
        assert trial.value is not None
        assert ("accuracy" in trial.metrics) == (trial.state == "complete")
    pruned_epochs = [t.epochs for t in trials if t.state == "pruned"]
    assert min(pruned_epochs) < TINY["n_epochs"]  # stopped before its last epoch

    complete = [t for t in trials if t.state == "complete"]
    best = max(complete, key=lambda t: t.value or 0.0)
    version = sdk.resolve("searched-sentiment")
    search = version.params["training"]["search"]
    assert search["best_trial"] == best.number
    assert search["best_value"] == pytest.approx(best.value)
    assert [row["number"] for row in search["trials"]] == list(range(6))
    assert version.params["training"]["hyperparameters"]["learning_rate"] == pytest.approx(
        best.params["learning_rate"]
    )
    assert version.metrics["val_macro_f1"] == pytest.approx(best.value)
    assert version.metrics["accuracy"] == pytest.approx(best.metrics["accuracy"])
    assert job.fine_tuned_model == f"{version.model}:{version.version}"

    answer = httpx.post(
        f"{server.url}/v1/classify",
        headers={"Authorization": f"Bearer {server.key}"},
        json={"model": "searched-sentiment", "input": ["the film was wonderful"]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def test_a_search_killed_mid_trial_resumes_from_its_stored_study(
    server: RunningServer, sdk: Client, file_id: str
) -> None:
    hyperparameters = {**TINY, "n_epochs": 2, "step_delay_s": 0.05}
    job = sdk.create_search_job(
        "slow_search_textcnn",
        file_id,
        space=SPACE,
        n_trials=2,
        pruning=False,
        hyperparameters=hyperparameters,
        seed=5,
    )

    def second_trial_running() -> TrialOut | None:
        trials = sdk.training_job_trials(job.id)
        return next((t for t in trials if t.number == 1 and t.state == "running"), None)

    cut = wait_for("trial 1 to start", second_trial_running, timeout_s=60)
    running = sdk.get_training_job(job.id)
    assert running.worker_id is not None
    os.kill(int(running.worker_id.split(":")[-2]), signal.SIGKILL)

    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in sdk.training_job_events(job.id, limit=1000).data]
    assert done.attempts == 1, messages
    trials = {t.number: t for t in sdk.training_job_trials(job.id)}
    assert trials[0].state == "complete"  # kept from the first run, not trained again
    assert trials[1].state == "failed"
    assert "interrupted" in (trials[1].error or "")
    again = trials[2]  # the cut-off trial's hyperparameters, tried again
    assert again.params == pytest.approx(cut.params)
    assert again.state == "complete"
    assert len(trials) == 3  # two counted, and the one cut off
    assert any(m.startswith("Resuming the search from its stored study") for m in messages)
    assert sum(m.startswith("Trial 0 started") for m in messages) == 1


@pytest.mark.parametrize(
    ("search", "param"),
    [
        ({"space": {"learning_rat": {"type": "float", "low": 0.1, "high": 1}}}, "learning_rat"),
        ({"space": {"dropout": {"type": "float", "low": 0.5, "high": 0.1}}}, "dropout"),
        ({"space": {"dropout": {"type": "float", "low": 0.1, "high": 1.5}}}, "dropout"),
        ({"space": {"n_filters": {"type": "int", "low": 8.5, "high": 64}}}, "n_filters.low"),
        ({"space": {"optimizer": {"type": "float", "low": 0, "high": 1}}}, "optimizer"),
        ({"space": {"optimizer": {"type": "categorical", "choices": ["adam"]}}}, "optimizer"),
        (
            {"space": {"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}},
            "learning_rate",
        ),
        ({"space": {"dropout": {"type": "uniform", "low": 0, "high": 0.5}}}, "dropout"),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5}}, "metric": "f1"},
            "metric",
        ),
    ],
)
def test_a_bad_search_space_is_a_400_naming_the_parameter(
    server: RunningServer, file_id: str, search: dict[str, Any], param: str
) -> None:
    response = httpx.post(
        f"{server.url}/v1/training/jobs",
        headers={"Authorization": f"Bearer {server.key}"},
        json={"recipe": "textcnn", "training_file": file_id, "search": search},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    expected = param if param == "metric" else f"space.{param}"
    assert error["param"] == f"search.{expected}"
    assert param.split(".")[0] in error["message"]


def test_cross_validation_reports_the_mean_and_deviation_of_every_metric(
    sdk: Client, file_id: str
) -> None:
    job = sdk.create_training_job(
        "textcnn",
        file_id,
        hyperparameters={**TINY, "n_epochs": 2},
        cross_validation=3,
        seed=2,
        model_name="cv-sdk",
    )
    assert job.cross_validation == 3
    done = finished(sdk, job.id)
    assert done.status == "succeeded", done.error
    version = sdk.resolve("cv-sdk")
    table = version.params["training"]["cross_validation"]
    folds = table["folds"]
    assert [fold["fold"] for fold in folds] == [0, 1, 2]
    assert sum(fold["size"] for fold in folds) == 216  # 240 less the 10% validation split
    for name in ("accuracy", "macro_f1", "micro_f1"):
        values = [fold[name] for fold in folds]
        assert done.metrics[f"cv_{name}_mean"] == pytest.approx(statistics.fmean(values))
        assert done.metrics[f"cv_{name}_std"] == pytest.approx(statistics.pstdev(values))
        assert done.metrics[name] == pytest.approx(statistics.fmean(values))
    assert math.isfinite(done.metrics["cv_accuracy_std"])
    assert table["final"] == "all"


def test_cross_validation_can_register_its_best_fold(sdk: Client, file_id: str) -> None:
    done = finished(
        sdk,
        sdk.create_training_job(
            "textcnn",
            file_id,
            hyperparameters={**TINY, "n_epochs": 1},
            cross_validation=2,
            cross_validation_final="best_fold",
            seed=2,
            model_name="best-fold",
        ).id,
    )
    assert done.status == "succeeded", done.error
    table = sdk.resolve("best-fold").params["training"]["cross_validation"]
    best = max(table["folds"], key=lambda fold: fold["macro_f1"])
    assert table["best_fold"] == best["fold"]
    assert done.metrics["accuracy"] == pytest.approx(best["accuracy"])


def test_cross_validation_asks_for_2_to_20_folds(server: RunningServer, file_id: str) -> None:
    for folds in (1, 21):
        response = httpx.post(
            f"{server.url}/v1/training/jobs",
            headers={"Authorization": f"Bearer {server.key}"},
            json={"recipe": "textcnn", "training_file": file_id, "cross_validation": folds},
            timeout=30,
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "cross_validation"


def test_the_docs_sdk_and_http_examples_run_as_written(
    server: RunningServer, file_id: str, tmp_path: Path
) -> None:
    text = DOCS.read_text(encoding="utf-8")
    [example] = blocks(text, "python")
    (tmp_path / "reviews.jsonl").write_bytes(jsonl(reviews(240, seed=3)))
    ran = run_script(server, f"python - <<'EOF'\n{example}EOF\n", tmp_path)
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}"
    lines = ran.stdout.splitlines()
    # Fewer trials than the pruner's startup_trials: every one runs whole.
    assert [line.split()[:2] for line in lines[:3]] == [[str(n), "complete"] for n in range(3)]
    assert "embedding_dim" in lines[0]  # the recipe's default space

    body = json.loads(blocks(text, "json")[1].replace("file-…", file_id))
    response = httpx.post(
        f"{server.url}/v1/training/jobs",
        headers={"Authorization": f"Bearer {server.key}"},
        json=body,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "search"
    assert job["search"]["space"]["filter_widths"]["choices"] == [[3, 4, 5], [2, 3, 4]]
    cancelled = httpx.post(
        f"{server.url}/v1/training/jobs/{job['id']}/cancel",
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=30,
    )
    assert cancelled.status_code == 200, cancelled.text
