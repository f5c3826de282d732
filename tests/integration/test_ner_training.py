"""Named-entity training end to end, against a real server and its worker process: a CoNLL
file uploaded to /v1/datasets trains `bilstm_tagger` through /v1/training/jobs; a tiny BERT
registered by upload is fine-tuned through OpenAI's door (`model` names the registered model,
and the job picks `finetune_transformer_ner` for the CoNLL file). Each fine-tuned model then
answers /v1/ner with the entities and their character offsets. The example of
docs/training.md runs as written.

The data is 120 template sentences (`tests.ner_data`); the models are tiny, so each job
trains in a few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from openmaas import Client
from openmaas.protocol.training import TrainingJobOut
from tests.integration.conftest import RunningServer, start_server, stop_server
from tests.ner_data import conll, sentences
from tests.runtimes.tiny_models import build_bert

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"
TEXT = "Nelson Mandela met Barack Obama in Buenos Aires."
ENTITIES = [
    ("Nelson Mandela", "PER", 0, 14),
    ("Barack Obama", "PER", 19, 31),
    ("Buenos Aires", "LOC", 35, 47),
]
TINY_TAGGER = {
    "n_epochs": 12,
    "min_frequency": 1,
    "embedding_dim": 32,
    "casing_dim": 8,
    "hidden_size": 32,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "dropout": 0.1,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("ner") / "home",
        # One torch thread per job: on a busy machine a second one only spins.
        {"OPENMAAS_WORKERS": "1", "OPENMAAS_TRAINING_THREADS": "1"},
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.key) as client:
        yield client


@pytest.fixture(scope="module")
def conll_file(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "ner.conll"
    path.write_text(conll(sentences(120, seed=0)), encoding="utf-8")
    dataset = sdk.upload_dataset(path)
    assert (dataset.status, dataset.task, dataset.format) == (
        "processed",
        "token-classification",
        "conll",
    )
    return dataset.id


def ner(server: RunningServer, model: str, texts: list[str]) -> list[list[dict[str, Any]]]:
    answer = httpx.post(
        f"{server.url}/v1/ner",
        headers=server.headers,
        json={"model": model, "input": texts},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return [row["entities"] for row in answer.json()["data"]]


def spans(entities: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    return [(e["text"], e["label"], e["start"], e["end"]) for e in entities]


def succeeded(sdk: Client, job_id: str) -> TrainingJobOut:
    done = sdk.wait_for_training_job(job_id, poll_s=0.2, timeout_s=240)
    assert done.status == "succeeded", done.error
    return done


def test_a_bilstm_tagger_job_trains_on_a_conll_file_and_serves_entities(
    server: RunningServer, sdk: Client, conll_file: str
) -> None:
    job = sdk.create_training_job(
        "bilstm_tagger", conll_file, hyperparameters=TINY_TAGGER, model_name="tagger", seed=0
    )
    assert (job.task, job.hyperparameters["early_stopping_metric"]) == (
        "token-classification",
        "f1",
    )
    done = succeeded(sdk, job.id)
    assert done.fine_tuned_model == "tagger:1"
    assert set(done.metrics) >= {"precision", "recall", "f1", "accuracy"}
    assert done.metrics["f1"] > 0.9
    version = sdk.resolve("tagger")
    assert (version.task, version.runtime, version.format) == (
        "token-classification",
        "openmaas-nn",
        "safetensors",
    )
    assert [t["label"] for t in version.params["training"]["report"]["per_type"]] == [
        "LOC",
        "ORG",
        "PER",
    ]
    served = ner(server, "tagger", [TEXT, "The weather was mild on Monday."])
    assert [spans(row) for row in served] == [ENTITIES, []]


def test_a_registered_transformer_is_fine_tuned_for_ner_through_the_openai_door(
    server: RunningServer, sdk: Client, conll_file: str, tmp_path: Path
) -> None:
    sdk.upload("tiny-bert", build_bert(tmp_path / "tiny-bert"))
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0) as oai:
        created = oai.fine_tuning.jobs.create(
            model="tiny-bert",
            training_file=conll_file,
            # Random weights need far more than a fine-tuning rate: 5e-5 x 60 = 3e-3.
            hyperparameters={"n_epochs": 12, "batch_size": 8, "learning_rate_multiplier": 60},
            suffix="ner",
            seed=1,
        )
    job = sdk.get_training_job(created.id)
    assert (job.recipe, job.task, job.base_version) == (
        "finetune_transformer_ner",
        "token-classification",
        "tiny-bert:1",
    )
    done = succeeded(sdk, job.id)
    # A random 32-wide BERT, not a pretrained one: without a seed the job draws its own (as
    # OpenAI's does) and test F1 ranged from 0.45 to 1.0 over runs; a fixed seed fixes the
    # split and the head. The served spans below are checked exactly.
    assert done.metrics["f1"] > 0.85
    model = str(done.fine_tuned_model)
    version = sdk.resolve(model)
    assert (version.task, version.runtime) == ("token-classification", "transformers")
    assert (version.lineage.transform, version.lineage.dataset_id) == ("fine-tune", conll_file)
    assert version.lineage.source["base_model"] == "tiny-bert:1"
    assert [spans(row) for row in ner(server, model, [TEXT])] == [ENTITIES]


def test_the_docs_example_runs_as_written(server: RunningServer, tmp_path: Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("## Named entities (token classification)")
    section = text[start : text.index("\n## ", start + 1)]
    [script] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    (tmp_path / "ner.conll").write_text(conll(sentences(120, seed=0)), encoding="utf-8")
    ran = subprocess.run(
        [sys.executable, "-c", script.replace("http://127.0.0.1:8000", server.url)],
        cwd=tmp_path,
        env={**os.environ, "OPENMAAS_API_KEY": server.key},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    first, *entities = ran.stdout.splitlines()
    found = re.fullmatch(r"succeeded bilstm_tagger-[0-9a-f]{8} (\d\.\d\d)", first)
    assert found, first
    # Seeded, so the figure repeats (0.94 here); unseeded, it ranged from 0.87 up over runs.
    assert float(found.group(1)) > 0.85
    assert entities == ["PER 0 14 Nelson Mandela", "PER 19 31 Barack Obama", "LOC 35 40 Paris"]
