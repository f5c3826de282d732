"""The text-classification recipes, trained for real on small slices of AG News: each beats
chance on held-out news, writes a directory its serving runtime loads, and reports metrics the
served model reproduces. The shared loop's guarantees are checked on the fast TextCNN: resume
after a crash ends with the same weights as an uninterrupted run, a cancel stops within one
step with a checkpoint, class weighting changes the loss, early stopping keeps the best epoch.

Sizes are tiny (32-wide networks, 32-token texts, a few hundred steps) so the module runs in
about a minute on 2 CPU cores.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from openmaas.errors import ModelLoadFailed
from openmaas.registry.detection import detect
from openmaas.registry.sources import plan_directory
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
from openmaas.training.hyperparameters import COMMON_DEFAULTS, LoopSettings
from openmaas.training.loop import (
    TENSORBOARD_DIRECTORY,
    ClassifierTrainer,
    LabeledItems,
    augment_text,
    class_weights,
    evaluate,
    open_writer,
    train_classifier,
)
from openmaas.training.recipe import (
    Checkpoint,
    TrainingContext,
    TrainingResult,
    TrainingStopped,
    batch_size_for,
)
from openmaas.training.recipes import RECIPES
from tests.conftest import SHARED_DATASETS
from tests.runtimes.tiny_models import minilm_path

DATASETS = SHARED_DATASETS or Path("shared-datasets-missing")
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
CHANCE = 0.25  # four balanced classes
# At chance, accuracy on 100 examples stays under 0.38 and on 200 under 0.34 (3 sigma).
BEATS_CHANCE = 0.4

TINY_SCRATCH: dict[str, dict[str, Any]] = {
    # AdamW: Adadelta (Kim's, the default) starts with tiny steps and needs more than these
    # 4 short epochs (0.365 here); tests/unit/test_pretrained_embeddings.py checks it.
    "textcnn": {"embedding_dim": 32, "n_filters": 16, "optimizer": "adamw"},
    "bilstm": {"embedding_dim": 32, "hidden_size": 32},
    "gru": {"embedding_dim": 32, "hidden_size": 32},
    "transformer_encoder": {"d_model": 32, "ff_dim": 64, "n_heads": 2, "learning_rate": 3e-3},
}
SCRATCH_COMMON = {
    "n_epochs": 4,
    "max_length": 32,
    "batch_size": 32,
    "learning_rate": 1e-2,
    "min_frequency": 1,
    "patience": 0,
}
TINY_PRETRAINED: dict[str, dict[str, Any]] = {
    "frozen_encoder": {
        "max_length": 32,
        "n_epochs": 20,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "patience": 0,
    },
    "finetune_transformer": {
        "max_length": 32,
        "n_epochs": 2,
        "batch_size": 8,
        "learning_rate": 3e-4,
        "warmup_ratio": 0.0,
        "patience": 0,
    },
}


# -- data and contexts ------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks gain nothing from a second thread, and OpenMP's spinning makes two
    threads many times slower than one when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ag_news() -> list[dict[str, str]]:
    """AG News (the 7,600-row file) shuffled with a fixed seed; title and description."""
    path = DATASETS / "ag_news" / "test.csv"
    if not path.is_file():
        pytest.skip(f"the AG News data is missing: {path}")
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    random.Random(0).shuffle(rows)
    # A backslash stands for a line break in this file (see its README).
    return [
        {"text": f"{title}. {body}".replace("\\", " "), "label": AG_NEWS_CLASSES[int(c) - 1]}
        for c, title, body in rows
    ]


@dataclass
class Job:
    """A context plus what the recipe reported through it."""

    ctx: TrainingContext
    messages: list[str] = field(default_factory=list)
    metrics: list[tuple[int, int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)


def make_job(
    root: Path,
    recipe: str,
    *,
    train: Sequence[Mapping[str, Any]],
    validation: Sequence[Mapping[str, Any]] = (),
    test: Sequence[Mapping[str, Any]] = (),
    hyperparameters: Mapping[str, Any],
    resume_from: Checkpoint | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_metrics: Callable[[int], None] = lambda step: None,
    output: str = "output",
    base_model_task: str | None = None,
) -> Job:
    """A job under `root` (its work directory is shared by every run of the same root, as a
    resumed job's is); checkpoints are copied to `root/store/<n>` as the job store would."""
    job = Job(
        ctx=TrainingContext(
            job_id=root.name,
            task="text-classification",
            train=list(train),
            validation=list(validation),
            test=list(test),
            hyperparameters=RECIPES[recipe].resolve(hyperparameters, len(train)),
            seed=0,
            output_dir=root / output,
            work_dir=root / "work",
            base_model=minilm_path(),
            base_model_reference="minilm:1",
            base_model_task=base_model_task,
            base_model_runtime="transformers",
            resume_from=resume_from,
            should_stop=should_stop,
        )
    )

    def on_checkpoint(directory: Path, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        store = root / "store"
        stored = store / str(len(list(store.iterdir())) if store.is_dir() else 0)
        shutil.copytree(directory, stored)
        job.checkpoints.append(Checkpoint(stored, step, epoch, dict(metrics)))

    def report(step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        job.metrics.append((step, epoch, dict(metrics)))
        on_metrics(step)

    job.ctx.on_checkpoint = on_checkpoint
    job.ctx.on_metrics = report
    job.ctx.on_message = lambda level, text: job.messages.append(text)
    return job


def minilm_source(reference: str) -> ModelSource:
    """The registry, as the serving engine opens a dependency: only the base exists."""
    assert reference == "minilm:1", reference
    return ModelSource.for_directory(minilm_path(), task="embedding", runtime="transformers")


def served_accuracy(
    result: TrainingResult, directory: Path, test: Sequence[Mapping[str, Any]]
) -> float:
    source = ModelSource.for_directory(directory, task=result.task, runtime=result.runtime)
    options = LoadOptions(open_dependency=minilm_source)
    model = get_runtime(result.runtime).load(source, options)
    try:
        rankings = model.classify([e["text"] for e in test])
    finally:
        model.unload()
    right = sum(int(r[0].label == e["label"]) for r, e in zip(rankings, test, strict=True))
    return right / len(test)


# -- every recipe, trained and served ---------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(TINY_SCRATCH))
def test_scratch_recipe_beats_chance_and_is_served_as_trained(
    recipe: str, ag_news: list[dict[str, str]], tmp_path: Path
) -> None:
    train, validation, test = ag_news[:1600], ag_news[1600:1700], ag_news[1700:1900]
    job = make_job(
        tmp_path,
        recipe,
        train=train,
        validation=validation,
        test=test,
        hyperparameters={**SCRATCH_COMMON, **TINY_SCRATCH[recipe]},
    )
    result = RECIPES[recipe].train(job.ctx)

    assert result.runtime == "openmaas-nn"
    assert result.metrics["accuracy"] > BEATS_CHANCE > CHANCE
    assert {p.name for p in job.ctx.output_dir.iterdir()} == {
        "openmaas.json",
        "model.safetensors",
        "tokenizer.json",
    }
    # The registered figures are the served model's: same predictions, same accuracy.
    assert served_accuracy(result, job.ctx.output_dir, test) == pytest.approx(
        result.metrics["accuracy"], abs=0.006
    )
    assert result.params["labels"] == sorted(AG_NEWS_CLASSES)
    assert result.report["split"] == "test"
    confusion = result.report["confusion_matrix"]
    assert sum(map(sum, confusion)) == len(test)
    assert [c["support"] for c in result.report["per_class"]] == [sum(row) for row in confusion]
    assert result.trained_tokens is not None
    assert result.trained_tokens > 0
    # One validation report and one checkpoint per epoch, TensorBoard events beside them.
    epoch_reports = [m for _, _, m in job.metrics if "val_accuracy" in m]
    assert len(epoch_reports) == 4
    assert [c.epoch for c in job.checkpoints] == [1, 2, 3, 4]
    events = list((job.ctx.work_dir / TENSORBOARD_DIRECTORY).glob("events.out.tfevents.*"))
    if importlib.util.find_spec("tensorboard") is not None:
        assert events
    else:  # torch's SummaryWriter needs the tensorboard package: the job says so
        assert "tensorboard is not installed: no event files are written" in job.messages


@pytest.mark.parametrize("recipe", sorted(TINY_PRETRAINED))
def test_pretrained_recipe_writes_a_hugging_face_classifier(
    recipe: str, ag_news: list[dict[str, str]], tmp_path: Path
) -> None:
    train, validation, test = ag_news[:64], ag_news[64:96], ag_news[96:196]
    job = make_job(
        tmp_path,
        recipe,
        train=train,
        validation=validation,
        test=test,
        hyperparameters=TINY_PRETRAINED[recipe],
    )
    result = RECIPES[recipe].train(job.ctx)

    assert result.runtime == "transformers"
    assert result.metrics["accuracy"] > BEATS_CHANCE
    output = job.ctx.output_dir
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {str(i): c for i, c in enumerate(sorted(AG_NEWS_CLASSES))}
    assert config["label2id"] == {label: i for i, label in enumerate(sorted(AG_NEWS_CLASSES))}
    detected = detect(plan_directory(output).files)
    assert (detected.task, detected.runtime, detected.format) == (
        "text-classification",
        "transformers",
        "safetensors",
    )
    assert not [p for p in output.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    assert served_accuracy(result, output, test) == pytest.approx(
        result.metrics["accuracy"], abs=0.011
    )
    if recipe == "frozen_encoder":
        # Only the head trained: the encoder's weights are the base model's, bit for bit.
        trained = load_file(str(output / "model.safetensors"))
        base = load_file(str(minilm_path() / "model.safetensors"))
        name = "encoder.layer.0.attention.self.query.weight"
        assert torch.equal(trained[f"bert.{name}"], base[name])
        assert list((job.ctx.work_dir / "features").glob("train-*.safetensors"))


def test_frozen_encoder_over_an_embedding_model_trains_a_linear_head_on_its_embeddings(
    ag_news: list[dict[str, str]], tmp_path: Path
) -> None:
    train, validation, test = ag_news[:64], ag_news[64:96], ag_news[96:196]
    job = make_job(
        tmp_path,
        "frozen_encoder",
        train=train,
        validation=validation,
        test=test,
        hyperparameters=TINY_PRETRAINED["frozen_encoder"],
        base_model_task="embedding",  # "auto" features: the base model's own embeddings
    )
    result = RECIPES["frozen_encoder"].train(job.ctx)

    assert (result.runtime, result.params["encoder"]) == ("linear-head", "minilm:1")
    assert result.metrics["accuracy"] > BEATS_CHANCE
    output = job.ctx.output_dir
    assert {p.name for p in output.iterdir()} == {
        "weights.safetensors",
        "labels.json",
        "openmaas.json",
    }
    spec = json.loads((output / "openmaas.json").read_text())
    assert (spec["encoder"], spec["input_dim"], spec["num_labels"]) == ("minilm:1", 384, 4)
    detected = detect(plan_directory(output).files)
    assert (detected.task, detected.runtime, detected.format) == (
        "text-classification",
        "linear-head",
        "safetensors",
    )
    # The features were the embeddings /v1/embeddings serves, so the served head scores the
    # test split as the job did.
    assert served_accuracy(result, output, test) == pytest.approx(
        result.metrics["accuracy"], abs=0.011
    )
    assert list((job.ctx.work_dir / "features").glob("train-*.safetensors"))


def test_finetune_over_an_embedding_model_trains_its_sentence_embedding(
    ag_news: list[dict[str, str]], tmp_path: Path
) -> None:
    """`auto` features over an embedding base: encoder and a linear head over its mean-pooled
    tokens train together, and the version carries the fine-tuned encoder."""
    train, validation, test = ag_news[:64], ag_news[64:96], ag_news[96:196]
    job = make_job(
        tmp_path,
        "finetune_transformer",
        train=train,
        validation=validation,
        test=test,
        hyperparameters=TINY_PRETRAINED["finetune_transformer"],
        base_model_task="embedding",
    )
    result = RECIPES["finetune_transformer"].train(job.ctx)

    assert (result.runtime, result.params["features"]) == ("linear-head", "embedding")
    assert "encoder" not in result.params  # no registered model is needed to serve it
    assert result.metrics["accuracy"] > BEATS_CHANCE
    output = job.ctx.output_dir
    spec = json.loads((output / "openmaas.json").read_text())
    assert (spec["bundled_encoder"], spec["pooling"], spec["input_dim"]) == ("encoder", "mean", 384)
    assert "encoder" not in spec
    assert (output / "encoder" / "config.json").is_file()
    assert (output / "encoder" / "tokenizer.json").is_file()
    detected = detect(plan_directory(output).files)
    assert (detected.task, detected.runtime, detected.format) == (
        "text-classification",
        "linear-head",
        "safetensors",
    )
    assert not [p for p in output.rglob("*") if p.suffix in (".bin", ".pt", ".pkl")]
    # The encoder trained: its weights moved off the base model's.
    trained = load_file(str(output / "encoder" / "model.safetensors"))
    base = load_file(str(minilm_path() / "model.safetensors"))
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(trained[name], base[name])
    assert served_accuracy(result, output, test) == pytest.approx(
        result.metrics["accuracy"], abs=0.011
    )


def test_a_bundled_encoder_must_be_the_versions_own_directory(tmp_path: Path) -> None:
    (tmp_path / "openmaas.json").write_text(
        json.dumps({"bundled_encoder": "../elsewhere", "pooling": "mean"})
    )
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["a", "b"]}))
    save_file(
        {"weight": torch.zeros(2, 384), "bias": torch.zeros(2)},
        str(tmp_path / "weights.safetensors"),
    )
    source = ModelSource.for_directory(tmp_path, task="text-classification", runtime="linear-head")
    with pytest.raises(ModelLoadFailed, match="bundled_encoder must be 'encoder'"):
        get_runtime("linear-head").load(source, LoadOptions())


def test_frozen_encoder_features_can_be_chosen_and_are_checked() -> None:
    recipe = RECIPES["frozen_encoder"]
    assert recipe.resolve({"features": "classifier"}, 10)["features"] == "classifier"
    with pytest.raises(ValueError, match="'features' must be one of auto, embedding, classifier"):
        recipe.resolve({"features": "pooler"}, 10)


# -- the loop's guarantees, on TextCNN --------------------------------------------------------

RESUMABLE = {
    **SCRATCH_COMMON,
    **TINY_SCRATCH["textcnn"],
    "n_epochs": 2,
    "batch_size": 16,
    "checkpoint_every_steps": 7,
    "augment": True,  # draws from the per-step generator
    "class_weighting": "oversample",  # draws from the per-epoch generator
    "dropout": 0.5,  # draws from the torch RNG restored from the checkpoint
    "optimizer": "adadelta",  # the default's state (two running averages) round-trips
    "learning_rate": 1.0,
}


class Crash(Exception):
    """Stands for a SIGKILL: the process dies with nothing cleaned up."""


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_a_run_resumed_after_a_crash_ends_with_the_same_weights(
    ag_news: list[dict[str, str]], tmp_path: Path
) -> None:
    train, validation = ag_news[:300], ag_news[300:350]
    whole = make_job(
        tmp_path / "whole", "textcnn", train=train, validation=validation, hyperparameters=RESUMABLE
    )
    expected = RECIPES["textcnn"].train(whole.ctx)

    def crash_at_step_30(step: int) -> None:
        if step == 30:
            raise Crash

    crashed = make_job(
        tmp_path / "job",
        "textcnn",
        train=train,
        validation=validation,
        hyperparameters=RESUMABLE,
        on_metrics=crash_at_step_30,
    )
    with pytest.raises(Crash):
        RECIPES["textcnn"].train(crashed.ctx)
    last = crashed.checkpoints[-1]
    assert last.step == 28  # every 7 steps: the 2 steps after it are lost
    at_epoch_end = next(c for c in crashed.checkpoints if "val_accuracy" in c.metrics)
    assert at_epoch_end.epoch == 1
    assert {p.suffix for p in last.directory.iterdir()} <= {".safetensors", ".json"}

    want = _weights(whole.ctx.output_dir)
    for checkpoint in (last, at_epoch_end):
        resumed = make_job(
            tmp_path / "job",
            "textcnn",
            train=train,
            validation=validation,
            hyperparameters=RESUMABLE,
            resume_from=checkpoint,
            output=f"resumed-{checkpoint.step}",
        )
        result = RECIPES["textcnn"].train(resumed.ctx)

        assert any(f"resuming at step {checkpoint.step}" in m for m in resumed.messages)
        got = _weights(resumed.ctx.output_dir)
        assert want.keys() == got.keys()
        for name in want:
            assert torch.equal(want[name], got[name]), (checkpoint.step, name)
        assert result.metrics == expected.metrics
        assert result.trained_tokens == expected.trained_tokens


def test_should_stop_stops_within_one_step_and_keeps_a_checkpoint(
    ag_news: list[dict[str, str]], tmp_path: Path
) -> None:
    polls = iter(range(1_000))
    job = make_job(
        tmp_path,
        "textcnn",
        train=ag_news[:300],
        hyperparameters=RESUMABLE,
        should_stop=lambda: next(polls) >= 3,  # asked to stop before the 4th step
    )
    with pytest.raises(TrainingStopped):
        RECIPES["textcnn"].train(job.ctx)
    assert [c.step for c in job.checkpoints] == [3]
    state = json.loads((job.checkpoints[0].directory / "state.json").read_text())
    assert state["progress"]["step"] == 3
    assert not job.ctx.output_dir.exists()  # nothing is registered from a cancelled job


def test_a_cancel_during_validation_resumes_into_the_same_run(
    ag_news: list[dict[str, str]], tmp_path: Path
) -> None:
    train, validation = ag_news[:300], ag_news[300:350]
    whole = make_job(
        tmp_path / "whole", "textcnn", train=train, validation=validation, hyperparameters=RESUMABLE
    )
    RECIPES["textcnn"].train(whole.ctx)
    steps_per_epoch = next(c.step for c in whole.checkpoints if "val_accuracy" in c.metrics)

    polls = iter(range(1_000))
    cancelled = make_job(
        tmp_path / "job",
        "textcnn",
        train=train,
        validation=validation,
        hyperparameters={**RESUMABLE, "checkpoint_every_steps": 1_000},
        # One poll before each step, then one per validation batch.
        should_stop=lambda: next(polls) == steps_per_epoch,
    )
    with pytest.raises(TrainingStopped, match="while evaluating"):
        RECIPES["textcnn"].train(cancelled.ctx)
    (checkpoint,) = cancelled.checkpoints
    assert checkpoint.step == steps_per_epoch
    resumed = make_job(
        tmp_path / "job",
        "textcnn",
        train=train,
        validation=validation,
        hyperparameters={**RESUMABLE, "checkpoint_every_steps": 1_000},
        resume_from=checkpoint,
        output="resumed",
    )
    RECIPES["textcnn"].train(resumed.ctx)
    assert next(m for _, _, m in resumed.metrics if "val_accuracy" in m) == next(
        c.metrics for c in whole.checkpoints if "val_accuracy" in c.metrics
    )
    want, got = _weights(whole.ctx.output_dir), _weights(resumed.ctx.output_dir)
    assert all(torch.equal(want[name], got[name]) for name in want)


def _first_loss(
    root: Path, data: Sequence[Mapping[str, Any]], **changes: Any
) -> tuple[float, TrainingResult]:
    job = make_job(
        root, "textcnn", train=data, hyperparameters={**RESUMABLE, "n_epochs": 1, **changes}
    )
    result = RECIPES["textcnn"].train(job.ctx)
    return next(m["loss"] for _, _, m in job.metrics if "loss" in m), result


def test_class_weighting_changes_the_loss(ag_news: list[dict[str, str]], tmp_path: Path) -> None:
    world = [e for e in ag_news if e["label"] == "World"][:170]
    sports = [e for e in ag_news if e["label"] == "Sports"][:30]
    imbalanced = world + sports
    common = {"augment": False, "dropout": 0.0}
    plain, plain_result = _first_loss(
        tmp_path / "none", imbalanced, class_weighting="none", **common
    )
    weighted, _ = _first_loss(
        tmp_path / "weighted", imbalanced, class_weighting="weighted", **common
    )
    assert weighted != pytest.approx(plain, rel=1e-3)
    _, oversampled = _first_loss(
        tmp_path / "oversample", imbalanced, class_weighting="oversample", **common
    )
    # An oversampled epoch draws Sports until it matches World: 170 + 170 examples.
    assert oversampled.report["training"]["trained_examples"] == 340
    assert plain_result.report["training"]["trained_examples"] == 200
    # Balanced weights: n / (classes * count).
    assert class_weights([0, 0, 0, 1], 3).tolist() == pytest.approx([2 / 3, 2.0, 0.0])


# -- the loop on a toy problem ----------------------------------------------------------------


def _toy_context(tmp_path: Path) -> TrainingContext:
    return TrainingContext(
        job_id="toy",
        task="text-classification",
        train=[],
        validation=[],
        test=[],
        hyperparameters={},
        seed=0,
        output_dir=tmp_path / "output",
        work_dir=tmp_path / "work",
    )


@pytest.mark.parametrize(
    ("inverted", "min_delta", "expected"),
    [
        # Validation labels opposite to the training ones: the loss is best after the first
        # epoch, then only grows; patience 2 stops after epoch 3, keeping epoch 1.
        (True, 0.0, (True, 1, 3)),
        # The same labels: the loss falls every epoch, so training runs its 10 epochs...
        (False, 0.0, (False, 10, 10)),
        # ...unless a fall must exceed a minimum to count.
        (False, 10.0, (True, 1, 3)),
    ],
)
def test_early_stopping_keeps_the_best_epoch(
    inverted: bool, min_delta: float, expected: tuple[bool, int, int], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    network = torch.nn.Linear(8, 2)

    def forward(items: Sequence[int]) -> torch.Tensor:
        logits: torch.Tensor = network(torch.nn.functional.one_hot(torch.tensor(items), 8).float())
        return logits

    items = list(range(8)) * 4
    train = LabeledItems(items, [i % 2 for i in items])
    validation = LabeledItems(list(range(8)), [(i + inverted) % 2 for i in range(8)])
    settings = LoopSettings.from_hyperparameters(
        {
            **COMMON_DEFAULTS,
            "n_epochs": 10,
            "patience": 2,
            "learning_rate": 0.1,
            "early_stopping_metric": "loss",
            "early_stopping_min_delta": min_delta,
            "batch_size": 8,
        }
    )
    outcome = train_classifier(
        _toy_context(tmp_path),
        network=network,
        forward=forward,
        train=train,
        validation=validation,
        labels=("even", "odd"),
        settings=settings,
    )
    assert (outcome.stopped_early, outcome.best_epoch, outcome.epochs) == expected
    restored = evaluate(network, forward, validation, ("even", "odd"))
    assert restored.loss == pytest.approx(outcome.best_value)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]),
        ("cosine", [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464]),
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_warmup_then_decay(schedule: str, expected: list[float], tmp_path: Path) -> None:
    settings = LoopSettings.from_hyperparameters(
        {
            **COMMON_DEFAULTS,
            "n_epochs": 1,
            "batch_size": 1,
            "learning_rate": 1.0,
            "warmup_ratio": 2 / 6,
            "schedule": schedule,
        }
    )
    trainer = ClassifierTrainer(
        _toy_context(tmp_path),
        network=torch.nn.Linear(2, 2),
        forward=lambda items: torch.zeros(len(items), 2),
        train=LabeledItems(list(range(6)), [0, 1] * 3),
        validation=LabeledItems([], []),
        labels=("a", "b"),
        settings=settings,
        augment=None,
        item_tokens=None,
        checkpoint_files=(),
    )
    assert trainer.total_steps == 6
    got = [trainer.learning_rate_at(step) for step in range(6)]
    assert got == pytest.approx(expected, abs=1e-4)


def test_without_tensorboard_the_job_warns_and_trains_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    messages: list[tuple[str, str]] = []
    ctx = _toy_context(tmp_path)
    ctx.on_message = lambda level, text: messages.append((level, text))
    writer = open_writer(ctx, tmp_path / "events", step=0, resumed=False)
    writer.add_scalar("train/loss", 1.0, 1)
    writer.close()
    assert messages == [("warning", "tensorboard is not installed: no event files are written")]
    assert not (tmp_path / "events").exists()


def test_augmentation_is_seeded_and_keeps_words() -> None:
    text = "the quick brown fox jumps over the lazy dog again"
    first = [augment_text(text, random.Random(f"0:{step}")) for step in range(20)]
    again = [augment_text(text, random.Random(f"0:{step}")) for step in range(20)]
    assert first == again
    assert any(a != text for a in first)
    for augmented in first:
        assert augmented.split()
        assert set(augmented.split()) <= set(text.split())
    assert augment_text("single", random.Random(0)) == "single"


# -- hyperparameters --------------------------------------------------------------------------


def test_recipes_declare_their_hyperparameters() -> None:
    assert sorted(RECIPES) == [
        "bilstm",
        "bilstm_tagger",
        "cnn",
        "finetune_transformer",
        "finetune_transformer_ner",
        "frozen_encoder",
        "gpt",
        "gru",
        "resnet",
        "textcnn",
        "transformer_encoder",
        "word2vec",
    ]
    for name, recipe in RECIPES.items():
        assert recipe.name == name
        embedding = name == "word2vec"
        generation = name == "gpt"  # its own tests: tests/unit/test_gpt_recipe.py
        tagging = name.endswith(("_tagger", "_ner"))  # tests/unit/test_ner_recipes.py
        images = name in ("cnn", "resnet")  # tests/integration/test_image_datasets_training.py
        assert recipe.tasks == (
            ("embedding",)
            if embedding
            else ("image-classification",)
            if images
            else ("text-generation",)
            if generation
            else ("token-classification",)
            if tagging
            else ("text-classification",)
        )
        defaults = recipe.defaults()
        # Enough examples that no "auto" batch size scales down (see batch_size_for).
        assert recipe.resolve({}, 100_000) == defaults
        assert recipe.resolve({"n_epochs": "auto"}, 100_000) == defaults
        if not (embedding or generation):  # the shared classification loop's hyperparameters
            texts_only = {"augment"} | ({"max_length"} if images else set())
            assert set(COMMON_DEFAULTS) - texts_only <= set(defaults)
    assert RECIPES["finetune_transformer"].needs_base_model
    assert RECIPES["frozen_encoder"].needs_base_model
    assert RECIPES["finetune_transformer_ner"].needs_base_model
    assert not RECIPES["textcnn"].needs_base_model
    assert RECIPES["resnet"].accepts_base_model  # from scratch, or fine-tuned
    assert not RECIPES["resnet"].needs_base_model
    assert RECIPES["textcnn"].defaults()["filter_widths"] == [3, 4, 5]
    assert RECIPES["textcnn"].defaults()["n_filters"] == 100
    assert RECIPES["textcnn"].defaults()["dropout"] == 0.5


@pytest.mark.parametrize(
    ("recipe", "given", "message"),
    [
        ("textcnn", {"epochs": 3}, "unknown hyperparameters for recipe 'textcnn': epochs"),
        ("textcnn", {"optimizer": "adam"}, "'optimizer' must be one of adamw, sgd"),
        ("bilstm", {"patience": -1}, "'patience' must be 0 or more"),
        ("gru", {"learning_rate": 0}, "'learning_rate' must be above 0"),
        ("gru", {"pooling": "attention"}, "'pooling' must be one of max, mean, last"),
        ("textcnn", {"filter_widths": [3, 0]}, "'filter_widths' must be at least 1"),
        ("bilstm", {"min_frequency": 0}, "'min_frequency' must be at least 1"),
        ("gru", {"early_stopping_min_delta": -0.1}, "must be 0 or more"),
        ("textcnn", {"dropout": 1.0}, r"'dropout' must be in \[0, 1\)"),
        ("transformer_encoder", {"d_model": 30, "n_heads": 4}, "multiple of n_heads"),
        ("frozen_encoder", {"augment": True}, "unknown hyperparameters"),
        ("finetune_transformer", {"class_weighting": "balanced"}, "none, weighted, oversample"),
        ("finetune_transformer", {"n_epochs": True}, "'n_epochs' must be an integer"),
        (
            "finetune_transformer",
            {"precision": "fp16"},
            "'precision' must be one of bf16-if-supported, bf16",
        ),
        ("finetune_transformer", {"group_by_length": "yes"}, "'group_by_length' must be true"),
        ("textcnn", {"precision": "bf16"}, "unknown hyperparameters"),  # the fine-tune's only
    ],
)
def test_bad_hyperparameters_are_refused_at_resolve(
    recipe: str, given: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RECIPES[recipe].resolve(given, 100)


def test_the_recipe_registry_imports_without_torch() -> None:
    # The job system validates hyperparameters in the API process, which never loads torch.
    code = "import sys, openmaas.training.recipes; print('torch' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("n_examples", "default", "expected"),
    [
        (1_529, 64, 16),  # BBC: 15.3 examples per step -> the nearest power of two
        (5_472, 64, 64),  # AG News: 55 -> 64, the default
        (6_047, 50, 50),  # never above the recipe's default
        (200, 64, 8),  # at least 8
        (200, 4, 4),  # ... unless the default is smaller
        (100_000, 32, 32),
    ],
)
def test_auto_batch_size_gives_a_small_dataset_enough_steps(
    n_examples: int, default: int, expected: int
) -> None:
    assert batch_size_for(n_examples, default) == expected


def test_only_an_auto_batch_size_of_a_from_scratch_recipe_scales() -> None:
    assert RECIPES["bilstm"].resolve({}, 1_529)["batch_size"] == 16
    assert RECIPES["bilstm"].resolve({"batch_size": "auto"}, 1_529)["batch_size"] == 16
    assert RECIPES["bilstm"].resolve({"batch_size": 64}, 1_529)["batch_size"] == 64
    assert RECIPES["textcnn"].resolve({}, 800)["batch_size"] == 8
    # A pretrained model's fine-tune keeps its default, whatever the data.
    default = RECIPES["finetune_transformer"].defaults()["batch_size"]
    assert RECIPES["finetune_transformer"].resolve({}, 80)["batch_size"] == default
