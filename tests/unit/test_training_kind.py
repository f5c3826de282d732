"""Creating training jobs: the training kind checks everything up front (recipe, files,
task, hyperparameters, base model, names), reads the files before queueing, and OpenAI's
dialect maps onto its recipes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai.types.fine_tuning import FineTuningJob

from openmaas.api.convert.training import fine_tuning_job_out
from openmaas.api.openai.fine_tuning_adapter import openai_request
from openmaas.auth.entities import SYSTEM
from openmaas.errors import InvalidRequest
from openmaas.jobs.entities import JobStatus
from openmaas.jobs.service import JobService
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.training.kind import TrainingJobKind
from openmaas.training.requests import EarlyStopping, JobRequest
from tests.unit.training_jobs_env import (
    ACME,
    ADMIN,
    OTHER,
    CountingRecipe,
    Env,
    jsonl,
    make_env,
)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(database_url, tmp_path)


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
    messages = [e.message for e in env.jobs.events(job.id, caller=ACME, order="asc").items]
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
    assert env.jobs.list(caller=ADMIN).items == []


def test_another_projects_file_is_not_found(env: Env) -> None:
    with pytest.raises(InvalidRequest) as caught:
        env.create(training_file=env.other_file)
    assert (caught.value.code, caught.value.param) == ("file_not_found", "training_file")


def test_a_file_too_small_to_split_fails_the_job_with_the_reason(env: Env) -> None:
    tiny = env.datasets.create(
        io.BytesIO(jsonl(4)), filename="tiny.jsonl", project="acme", caller=SYSTEM
    )
    with pytest.raises(InvalidRequest) as caught:
        env.create(training_file=tiny.id, test_split=0.05)
    assert caught.value.code == "invalid_training_file"
    (job,) = env.jobs.list(caller=ACME).items
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error["code"] == "invalid_training_file"
    assert "too small to hold out a test split" in job.error["message"]


def test_openai_names_map_onto_the_recipe(env: Env) -> None:
    request = openai_request(
        env.training,
        caller=ACME,
        model="counting",
        training_file=env.train_file,
        hyperparameters={"n_epochs": 4, "batch_size": "auto"},
        suffix="sst",
    )
    job = env.jobs.create("training", request, caller=ACME)
    assert job.hyperparameters["n_epochs"] == 4
    assert job.hyperparameters["batch_size"] == 4  # auto: the recipe's default
    assert job.model_name.startswith("sst-")
    out = fine_tuning_job_out(job)
    assert (out.model, out.organization_id, out.status) == ("counting", "acme", "queued")
    assert out.hyperparameters.n_epochs == 4
    # The stock client's own model parses what we send.
    parsed = FineTuningJob.model_validate(out.model_dump(mode="json"))
    assert parsed.id == job.id
    assert parsed.method is not None

    with pytest.raises(InvalidRequest) as caught:
        openai_request(
            env.training,
            caller=ACME,
            model="counting",
            training_file=env.train_file,
            hyperparameters={"learning_rate_multiplier": 2.0},
        )
    assert "no hyperparameter for hyperparameters.learning_rate_multiplier" in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        openai_request(env.training, caller=ACME, model="gpt-4o-mini", training_file=env.train_file)
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
    training = TrainingJobKind(
        env.registry.db, registry=env.registry, datasets=env.datasets, recipes=RECIPES
    )
    jobs = JobService(env.registry.db, kinds=[training])

    request = openai_request(training, caller=ACME, model="encoder", training_file=env.train_file)
    assert (request.recipe, request.base_model) == ("finetune_transformer", "encoder")
    prepared = jobs.prepare("training", request, caller=ACME)
    assert prepared.options["base_version"] == "encoder:1"  # pinned: alias moves do not matter
    assert prepared.options["model"] == "encoder"
    # Another project's private model is not there for it: answered as for no model at all.
    with pytest.raises(InvalidRequest) as caught:
        openai_request(training, caller=OTHER, model="encoder", training_file=env.other_file)
    with pytest.raises(InvalidRequest) as absent:
        openai_request(training, caller=OTHER, model="no-such", training_file=env.other_file)
    assert (caught.value.code, caught.value.message) == (
        "model_not_found",
        absent.value.message.replace("no-such", "encoder"),
    )
    with pytest.raises(InvalidRequest) as caught:
        jobs.prepare(
            "training",
            JobRequest(training_file=env.train_file, recipe="frozen_encoder"),
            caller=ACME,
        )
    assert caught.value.param == "base_model"
    assert "fine-tunes a base model: name one" in caught.value.message
