"""The token-classification (NER) recipes, trained for real on small data: `bilstm_tagger`
from scratch and `finetune_transformer_ner` over a tiny BERT (the MiniLM vocabulary, random
weights), each on 60 template sentences (`tests.ner_data`). Each learns the entities, writes a
directory its runtime loads, and the served model returns the entities with character offsets
that reproduce the registered figures. Also: tags aligned to subwords by hand-checked word
ids, a tagger resumed after a crash ends with the same weights, the job system picks the NER
recipe for a CoNLL file, and CoNLL-2003 itself goes through the dataset service into a tagger.

Sizes are tiny (32-wide networks, a few hundred steps), so the module runs in about half a
minute on 2 CPU cores.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from openmaas.api.openai.fine_tuning_adapter import openai_request
from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.datasets.service import DatasetService
from openmaas.errors import ModelLoadFailed, WrongTask
from openmaas.jobs.service import JobService
from openmaas.registry.composition import Registry
from openmaas.registry.detection import detect
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, get_runtime
from openmaas.tasks.token_classification import Entity
from openmaas.training.kind import TrainingJobKind
from openmaas.training.ner_metrics import entity_spans
from openmaas.training.recipe import Checkpoint, TrainingContext, TrainingResult, TrainingStopped
from openmaas.training.recipes import RECIPES
from openmaas.training.recipes.bilstm_tagger import words_text
from openmaas.training.token_loop import IGNORED, align_tags
from tests.conftest import SHARED_DATASETS, needs_shared_datasets
from tests.ner_data import conll, sentences
from tests.runtimes.tiny_models import build_bert, minilm_path

TAGS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
TINY_TAGGER = {
    "n_epochs": 15,
    "min_frequency": 1,
    "embedding_dim": 32,
    "casing_dim": 8,
    "hidden_size": 32,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "dropout": 0.1,
    "patience": 0,
}
TINY_TRANSFORMER = {
    "n_epochs": 8,
    "batch_size": 8,
    "learning_rate": 3e-3,  # random weights: far above a fine-tuning rate
    "warmup_ratio": 0.0,
    "max_length": 48,
    "patience": 0,
}
# Served texts in the templates' style, written as a person would (no space before the
# period), with the entities expected back: (text, label, start, end).
SERVED = [
    (
        "Nelson Mandela met Barack Obama in Buenos Aires.",
        [
            ("Nelson Mandela", "PER", 0, 14),
            ("Barack Obama", "PER", 19, 31),
            ("Buenos Aires", "LOC", 35, 47),
        ],
    ),
    (
        "Angela Merkel visited U.S. on Friday.",
        [("Angela Merkel", "PER", 0, 13), ("U.S.", "LOC", 22, 26)],
    ),
    ("Shares of Deutsche Bank fell.", [("Deutsche Bank", "ORG", 10, 23)]),
    ("", []),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks gain nothing from a second thread (and lose to OpenMP spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def context(
    root: Path,
    recipe: str,
    hyperparameters: Mapping[str, Any],
    *,
    train: Sequence[Mapping[str, Any]] | None = None,
    validation: Sequence[Mapping[str, Any]] | None = None,
    test: Sequence[Mapping[str, Any]] | None = None,
    base_model: Path | None = None,
    resume_from: Checkpoint | None = None,
) -> TrainingContext:
    train = sentences(60, seed=0) if train is None else train
    return TrainingContext(
        job_id=root.name,
        task="token-classification",
        train=list(train),
        validation=list(sentences(14, seed=1) if validation is None else validation),
        test=list(sentences(21, seed=2) if test is None else test),
        hyperparameters=RECIPES[recipe].resolve(hyperparameters, len(train)),
        seed=0,
        output_dir=root / "output",
        work_dir=root / "work",
        base_model=base_model,
        resume_from=resume_from,
    )


def load_served(result: TrainingResult, directory: Path) -> LoadedModel:
    source = ModelSource.for_directory(directory, task=result.task, runtime=result.runtime)
    return get_runtime(result.runtime).load(source, LoadOptions())


def served_f1(model: LoadedModel, examples: Sequence[Mapping[str, Any]]) -> float:
    """Entity F1 of the served model on the examples' words joined by spaces: a served entity
    is right when its character span and type are a true entity's."""
    joined = [words_text(e["tokens"]) for e in examples]
    served = model.extract_entities([text for text, _ in joined])
    right = found = expected = 0
    for (text, spans), entities, example in zip(joined, served, examples, strict=True):
        true = {
            (spans[s.start][0], spans[s.end - 1][1], s.label) for s in entity_spans(example["tags"])
        }
        got = {(e.start, e.end, e.label) for e in entities}
        assert all(text[e.start : e.end] == e.text for e in entities)
        right, found, expected = right + len(true & got), found + len(got), expected + len(true)
    precision, recall = right / max(1, found), right / max(1, expected)
    return 2 * precision * recall / (precision + recall) if right else 0.0


def spans_of(entities: Sequence[Entity]) -> list[tuple[str, str, int, int]]:
    return [(e.text, e.label, e.start, e.end) for e in entities]


def check_served(
    model: LoadedModel,
    result: TrainingResult,
    cases: Sequence[tuple[str, list[tuple[str, str, int, int]]]],
    test: Sequence[Mapping[str, Any]],
) -> None:
    served = model.extract_entities([text for text, _ in cases])
    assert [spans_of(entities) for entities in served] == [expected for _, expected in cases]
    # A score is the mean probability of the entity's tags (each its piece's most likely).
    assert all(1 / len(TAGS) <= (e.score or 0) <= 1 for entities in served for e in entities)
    # The registered figures are the served model's.
    assert served_f1(model, test) == pytest.approx(result.metrics["f1"], abs=0.03)


def inner_punctuation(example: Mapping[str, Any]) -> bool:
    return any(len(word) > 1 and not word.isalnum() for word in example["tokens"])


# -- the recipes, trained and served ----------------------------------------------------------


def test_bilstm_tagger_learns_entities_and_the_runtime_serves_their_spans(tmp_path: Path) -> None:
    ctx = context(tmp_path, "bilstm_tagger", TINY_TAGGER)
    result = RECIPES["bilstm_tagger"].train(ctx)

    assert (result.task, result.runtime) == ("token-classification", "openmaas-nn")
    assert set(result.metrics) == {"precision", "recall", "f1", "accuracy"}
    assert result.metrics["f1"] > 0.9
    assert result.params["labels"] == TAGS
    assert result.report["split"] == "test"
    assert [t["label"] for t in result.report["per_type"]] == ["LOC", "ORG", "PER"]
    assert result.trained_tokens is not None
    assert result.trained_tokens > 0
    output = ctx.output_dir
    assert {p.name for p in output.iterdir()} == {
        "openmaas.json",
        "model.safetensors",
        "tokenizer.json",
    }
    spec = json.loads((output / "openmaas.json").read_text())
    assert (spec["task"], spec["architecture"], spec["labels"]) == (
        "token-classification",
        "rnn-tagger",
        TAGS,
    )
    detected = detect(plan_directory(output).files)
    assert (detected.task, detected.runtime, detected.format) == (
        "token-classification",
        "openmaas-nn",
        "safetensors",
    )

    model = load_served(result, output)
    try:
        check_served(model, result, SERVED, sentences(21, seed=2))
        with pytest.raises(WrongTask):
            model.classify(["a tagger does not classify texts"])
    finally:
        model.unload()
    as_classifier = ModelSource.for_directory(
        output, task="text-classification", runtime="openmaas-nn"
    )
    with pytest.raises(ModelLoadFailed, match="holds a token-classification network"):
        get_runtime("openmaas-nn").load(as_classifier, LoadOptions())


def test_finetune_transformer_ner_writes_a_hugging_face_tagger_the_runtime_serves(
    tmp_path: Path,
) -> None:
    base = build_bert(tmp_path / "base")
    ctx = context(tmp_path / "job", "finetune_transformer_ner", TINY_TRANSFORMER, base_model=base)
    result = RECIPES["finetune_transformer_ner"].train(ctx)

    assert (result.task, result.runtime) == ("token-classification", "transformers")
    assert result.metrics["f1"] > 0.9
    output = ctx.output_dir
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert config["id2label"] == {str(i): tag for i, tag in enumerate(TAGS)}
    assert config["label2id"] == {tag: i for i, tag in enumerate(TAGS)}
    detected = detect(plan_directory(output).files)
    assert (detected.task, detected.runtime, detected.format) == (
        "token-classification",
        "transformers",
        "safetensors",
    )
    assert not [p for p in output.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    assert (output / "tokenizer.json").is_file()
    # Every weight trained, the encoder's too.
    trained = load_file(str(output / "model.safetensors"))
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(
        trained[f"bert.{name}"], load_file(str(base / "model.safetensors"))[name]
    )

    # The runtime cuts a served text into words at punctuation too: "U.S." is four words
    # there, three of them subwords that learned no tag in training, so it may come back cut
    # ("U"). Words without punctuation inside come back whole, as trained.
    whole_words = [case for case in SERVED if "U.S." not in case[0]]
    test = [e for e in sentences(21, seed=2) if not inner_punctuation(e)]
    model = load_served(result, output)
    try:
        check_served(model, result, whole_words, test)
    finally:
        model.unload()


def test_tags_go_on_each_words_first_subword_and_cut_words_are_marked() -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    words = ["Angela", "Merkel", "visited", "U.S.", "yesterday"]
    tags = [5, 6, 0, 1, 0]  # B-PER I-PER O B-LOC O
    encoded = tokenizer([words], is_split_into_words=True, truncation=True, max_length=8)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]) == [
        "[CLS]", "angela", "mer", "##kel", "visited", "u", ".", "[SEP]"
    ]  # fmt: skip
    first = align_tags(encoded.word_ids(0), tags)
    assert first.targets == (IGNORED, 5, 6, IGNORED, 0, 1, IGNORED, IGNORED)
    assert first.word_starts == (1, 2, 4, 5, -1)  # "yesterday" was cut off
    assert first.tags == tuple(tags)
    continued = align_tags(encoded.word_ids(0), tags, continuation=[0, 2, 2, 4, 4, 6, 6])
    assert continued.targets == (IGNORED, 5, 6, 6, 0, 1, 2, IGNORED)


@pytest.mark.parametrize(
    ("recipe", "given", "message"),
    [
        ("bilstm_tagger", {"class_weighting": "oversample"}, "use 'weighted'"),
        ("bilstm_tagger", {"early_stopping_metric": "macro_f1"}, "must be one of f1, precision"),
        ("bilstm_tagger", {"casing_dim": 0}, "'casing_dim' must be at least 1"),
        ("finetune_transformer_ner", {"augment": True}, "'augment' must be false"),
        ("finetune_transformer_ner", {"label_all_subwords": "yes"}, "must be true or false"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_fix(
    recipe: str, given: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RECIPES[recipe].resolve(given, 100)


def test_a_tagger_resumed_after_a_crash_ends_with_the_same_weights(tmp_path: Path) -> None:
    hp = {**TINY_TAGGER, "n_epochs": 2, "checkpoint_every_steps": 5, "augment": True}
    whole = context(tmp_path / "whole", "bilstm_tagger", hp)
    RECIPES["bilstm_tagger"].train(whole)

    class Crash(Exception):
        pass

    checkpoints: list[Checkpoint] = []
    crashed = context(tmp_path / "job", "bilstm_tagger", hp)

    def keep(directory: Path, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        stored = tmp_path / "store" / str(step)
        shutil.copytree(directory, stored)
        checkpoints.append(Checkpoint(stored, step, epoch, dict(metrics)))

    def crash_at_step_10(step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        if step == 10:
            raise Crash

    crashed.on_checkpoint = keep
    crashed.on_metrics = crash_at_step_10
    with pytest.raises(Crash):
        RECIPES["bilstm_tagger"].train(crashed)
    # Every 5 steps and at the epoch's end (8 steps an epoch); step 10 was saved, then it died.
    assert [c.step for c in checkpoints] == [5, 8, 10]
    assert (checkpoints[-1].directory / "tokenizer.json").is_file()

    want = load_file(str(whole.output_dir / "model.safetensors"))
    for checkpoint in (checkpoints[0], checkpoints[-1]):  # in the first epoch, in the second
        resumed = context(tmp_path / "job", "bilstm_tagger", hp, resume_from=checkpoint)
        resumed.output_dir = tmp_path / "job" / f"resumed-{checkpoint.step}"
        RECIPES["bilstm_tagger"].train(resumed)
        got = load_file(str(resumed.output_dir / "model.safetensors"))
        assert want.keys() == got.keys()
        assert all(torch.equal(want[name], got[name]) for name in want)


def test_a_cancelled_tagger_stops_within_a_step_with_a_checkpoint(tmp_path: Path) -> None:
    ctx = context(tmp_path, "bilstm_tagger", {**TINY_TAGGER, "batch_size": 4})  # 15 steps an epoch
    steps: list[int] = []
    saved: list[int] = []
    ctx.on_metrics = lambda step, epoch, metrics: steps.append(step)
    ctx.on_checkpoint = lambda directory, step, epoch, metrics: saved.append(step)
    ctx.should_stop = lambda: len(steps) >= 1  # asked to stop after the first report
    with pytest.raises(TrainingStopped):
        RECIPES["bilstm_tagger"].train(ctx)
    # Reports come every 10 steps: stopped before step 11, the checkpoint saved at 10.
    assert (steps, saved) == ([10], [10])
    assert not ctx.output_dir.exists()


# -- jobs and real data -----------------------------------------------------------------------


@pytest.fixture
def datasets(registry: Registry) -> DatasetService:
    return DatasetService(registry.db, registry.artifacts)


def test_a_registered_transformer_fine_tunes_with_the_recipe_for_the_files_task(
    registry: Registry, datasets: DatasetService, tmp_path: Path
) -> None:
    encoder = build_bert(tmp_path / "encoder")
    registry.registration.register_plan(
        "encoder", plan_directory(encoder), VersionSpec(project="acme"), caller=SYSTEM
    )
    training = TrainingJobKind(registry.db, registry=registry, datasets=datasets, recipes=RECIPES)
    jobs = JobService(registry.db, kinds=[training])
    principal = Principal(project="acme", key_id=1, prefix="acme0001", scopes=(Scope.TRAINING,))
    ner_file = datasets.create(
        io.BytesIO(conll(sentences(40, seed=0)).encode()),
        filename="ner.conll",
        project="acme",
        caller=SYSTEM,
    )
    texts = "".join(
        json.dumps({"text": f"text {i}", "label": "ab"[i % 2]}) + "\n" for i in range(40)
    )
    classify_file = datasets.create(
        io.BytesIO(texts.encode()), filename="c.jsonl", project="acme", caller=SYSTEM
    )
    assert ner_file.task == "token-classification"

    picked = {}
    for file in (ner_file, classify_file):
        request = openai_request(training, caller=principal, model="encoder", training_file=file.id)
        picked[file.task] = request.recipe
        jobs.prepare("training", request, caller=principal)  # the task fits the recipe
    assert picked == {
        "token-classification": "finetune_transformer_ner",
        "text-classification": "finetune_transformer",
    }


@needs_shared_datasets
def test_conll2003_goes_through_the_dataset_service_into_a_tagger(
    datasets: DatasetService, tmp_path: Path
) -> None:
    path = (SHARED_DATASETS or Path("missing")) / "conll2003" / "train.txt"
    if not path.is_file():
        pytest.skip(f"the CoNLL-2003 data is missing: {path}")
    # The first 700 sentences (documents and -DOCSTART- lines included), IOB1 as published.
    head = "\n\n".join(path.read_text(encoding="utf-8").split("\n\n")[:700]) + "\n"
    dataset = datasets.create(
        io.BytesIO(head.encode()), filename="train.txt", project="p", format="conll", caller=SYSTEM
    )
    assert (dataset.status.value, dataset.task) == ("processed", "token-classification")
    train, validation, test = datasets.splits(
        dataset.id, caller=SYSTEM, seed=0, ratios=(0.7, 0.1, 0.2)
    )
    # IOB1 became BIO: every entity opens with B-.
    opened = [e["tags"][s.start] for e in train for s in entity_spans(e["tags"])]
    assert opened
    assert all(tag.startswith("B-") for tag in opened)

    hp = {**TINY_TAGGER, "n_epochs": 6, "batch_size": 16, "dropout": 0.3}
    ctx = context(tmp_path, "bilstm_tagger", hp, train=train, validation=validation, test=test)
    result = RECIPES["bilstm_tagger"].train(ctx)
    assert result.params["labels"] == [
        "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"
    ]  # fmt: skip
    # 456 sentences, 6 epochs: far from CoNLL's figures, far above finding nothing.
    assert result.metrics["f1"] > 0.25
    model = load_served(result, ctx.output_dir)
    try:
        assert served_f1(model, test) == pytest.approx(result.metrics["f1"], abs=0.1)
    finally:
        model.unload()
