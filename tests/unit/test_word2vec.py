"""The word2vec recipe, trained for real on gensim's bundled Lee corpus (300 news articles,
60,000 words): it reports a loss per epoch and the analogy metrics, writes safetensors and
JSON that the registry takes and the `word2vec` runtime serves, places related words and
texts nearer than unrelated ones, is reproducible from its seed, and resumes a cancelled run
into the vectors an uninterrupted one ends with.

Sizes are small (32 to 50 dimensions, a few epochs) so the module runs in about 15 seconds
on 2 CPU cores.
"""

from __future__ import annotations

import importlib.resources
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openmaas.auth.entities import SYSTEM
from openmaas.registry.composition import Registry
from openmaas.registry.detection import detect
from openmaas.registry.intake import pickle_reason
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
from openmaas.training.recipe import Checkpoint, TrainingContext, TrainingResult, TrainingStopped
from openmaas.training.recipes import RECIPES
from openmaas.training.recipes.word2vec import analogy_scores, training_sentences
from openmaas.word_vectors.saved import load_word_vectors
from openmaas.word_vectors.tokenizer import WordTokenizer

gensim = pytest.importorskip("gensim")

LEE = importlib.resources.files("gensim").joinpath("test/test_data/lee_background.cor")
QUESTIONS = importlib.resources.files("gensim").joinpath("test/test_data/questions-words.txt")
SMALL = {"vector_size": 50, "min_count": 2, "n_epochs": 10}
TINY = {"vector_size": 16, "min_count": 3, "n_epochs": 3, "analogy_vocab_size": 0}


@pytest.fixture(scope="module")
def lee() -> list[dict[str, str]]:
    return [{"text": line} for line in LEE.read_text(encoding="utf-8").splitlines()]


@dataclass
class Job:
    """A context plus what the recipe reported through it."""

    ctx: TrainingContext
    metrics: list[tuple[int, int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def make_job(
    root: Path,
    examples: Sequence[Mapping[str, str]],
    hyperparameters: Mapping[str, Any],
    *,
    resume_from: Checkpoint | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    output: str = "output",
) -> Job:
    """270 examples to train on, 30 to test on; checkpoints copied to `root/store/<n>` as the
    job store would, the work directory shared by every run of the same root."""
    job = Job(
        ctx=TrainingContext(
            job_id=root.name,
            task="embedding",
            train=list(examples[:270]),
            validation=[],
            test=list(examples[270:]),
            hyperparameters=RECIPES["word2vec"].resolve(hyperparameters, 270),
            seed=3,
            output_dir=root / output,
            work_dir=root / "work",
            resume_from=resume_from,
            should_stop=should_stop,
        )
    )

    def on_checkpoint(directory: Path, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        store = root / "store"
        stored = store / str(len(list(store.iterdir())) if store.is_dir() else 0)
        shutil.copytree(directory, stored)
        job.checkpoints.append(Checkpoint(stored, step, epoch, dict(metrics)))

    job.ctx.on_checkpoint = on_checkpoint
    job.ctx.on_metrics = lambda step, epoch, metrics: job.metrics.append(
        (step, epoch, dict(metrics))
    )
    job.ctx.on_message = lambda level, text: job.messages.append(text)
    return job


@pytest.fixture(scope="module")
def skipgram(
    lee: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Job, TrainingResult]:
    job = make_job(tmp_path_factory.mktemp("skipgram"), lee, SMALL)
    return job, RECIPES["word2vec"].train(job.ctx)


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- training ---------------------------------------------------------------------------------


def test_skipgram_reports_a_falling_loss_per_epoch_and_the_registered_metrics(
    skipgram: tuple[Job, TrainingResult],
) -> None:
    job, result = skipgram
    assert [(step, epoch) for step, epoch, _ in job.metrics] == [(e, e) for e in range(1, 11)]
    losses = [metrics["train_loss"] for _, _, metrics in job.metrics]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]
    assert [c.epoch for c in job.checkpoints] == list(range(1, 11))
    assert (result.task, result.runtime) == ("embedding", "word2vec")
    # 270 short news articles cover few of the 19,544 questions, and answer fewer.
    assert 0.01 < result.metrics["analogy_coverage"] < 0.1
    assert 0 <= result.metrics["analogy_accuracy"] < 0.2
    assert 0.8 < result.metrics["test_word_coverage"] < 1
    assert result.params == {
        "architecture": "skipgram",
        "dimensions": 50,
        "vocabulary_size": len(load_word_vectors(job.ctx.output_dir).words),
        "normalize": "l2",
    }
    assert result.trained_tokens is not None
    assert result.trained_tokens > 10 * 50_000


def test_the_output_is_safetensors_and_json_and_registers_as_a_word2vec_embedding_model(
    skipgram: tuple[Job, TrainingResult], registry: Registry
) -> None:
    output = skipgram[0].ctx.output_dir
    files = sorted(path.name for path in output.iterdir())
    assert files == ["openmaas.json", "vectors.safetensors", "vocabulary.json"]
    for path in output.iterdir():
        assert pickle_reason(path.name, path.read_bytes()[:16], path) is None
    plan = plan_directory(output)
    found = detect(plan.files)
    assert (found.task, found.runtime, found.format) == ("embedding", "word2vec", "safetensors")
    # The workers' registry refuses pickles: this one takes the directory as it is.
    version = registry.registration.register_plan("lee-vectors", plan, VersionSpec(), caller=SYSTEM)
    assert (version.task, version.runtime) == ("embedding", "word2vec")


def test_related_words_are_nearer_than_unrelated_ones(
    skipgram: tuple[Job, TrainingResult],
) -> None:
    saved = load_word_vectors(skipgram[0].ctx.output_dir)
    rows = {word: row for row, word in enumerate(saved.words)}

    def similarity(a: str, b: str) -> float:
        return cosine(saved.vectors[rows[a]], saved.vectors[rows[b]])

    # The corpus's stories: bushfires in New South Wales, the war in Afghanistan.
    assert similarity("fire", "firefighters") > similarity("fire", "taliban") + 0.2
    assert similarity("afghanistan", "taliban") > similarity("afghanistan", "firefighters") + 0.2


def test_the_served_embeddings_place_texts_on_one_subject_nearer(
    skipgram: tuple[Job, TrainingResult],
) -> None:
    job, result = skipgram
    source = ModelSource.for_directory(
        job.ctx.output_dir, task=result.task, runtime=result.runtime, params=result.params
    )
    model = get_runtime(result.runtime).load(source, LoadOptions())
    fires, blaze, war = model.embed(
        [
            "Bushfires threaten homes near Sydney",
            "Firefighters battle a blaze in New South Wales",
            "Taliban fighters retreat in Afghanistan",
        ]
    )
    assert model.embedding_dimensions == 50
    assert np.linalg.norm(fires) == pytest.approx(1.0, abs=1e-5)
    assert cosine(fires, blaze) > cosine(fires, war) + 0.1
    assert cosine(fires, blaze) > cosine(blaze, war) + 0.1


def test_cbow_trains_and_reports_the_same_metrics(
    lee: list[dict[str, str]], tmp_path: Path
) -> None:
    job = make_job(tmp_path, lee, {**TINY, "architecture": "cbow", "analogy_vocab_size": 5000})
    result = RECIPES["word2vec"].train(job.ctx)
    assert len(job.metrics) == 3
    assert {"analogy_coverage", "analogy_accuracy", "test_word_coverage"} <= set(result.metrics)
    assert result.params["architecture"] == "cbow"
    assert load_word_vectors(job.ctx.output_dir).dimensions == 16


def test_the_batched_analogy_test_answers_as_gensim_does(
    skipgram: tuple[Job, TrainingResult],
) -> None:
    saved = load_word_vectors(skipgram[0].ctx.output_dir)
    vectors = gensim.models.KeyedVectors(saved.dimensions)
    vectors.add_vectors(list(saved.words), saved.vectors)
    with importlib.resources.as_file(QUESTIONS) as path:
        _, sections = vectors.evaluate_word_analogies(str(path), restrict_vocab=len(vectors))
    total = sections[-1]
    asked = len(total["correct"]) + len(total["incorrect"])
    ours = analogy_scores(saved.words, saved.vectors, len(saved.words))
    assert ours["analogy_accuracy"] == pytest.approx(len(total["correct"]) / asked)
    assert ours["analogy_coverage"] == pytest.approx(asked / 19_544)
    assert skipgram[1].metrics["analogy_accuracy"] == ours["analogy_accuracy"]
    # Restricted to fewer words, fewer questions can be asked.
    assert analogy_scores(saved.words, saved.vectors, 500)["analogy_coverage"] < asked / 19_544
    assert analogy_scores(saved.words, saved.vectors, 0) == {}


# -- reproducibility, cancel and resume -------------------------------------------------------


def test_the_same_seed_gives_the_same_vectors(lee: list[dict[str, str]], tmp_path: Path) -> None:
    first = make_job(tmp_path / "first", lee, TINY)
    second = make_job(tmp_path / "second", lee, TINY)
    RECIPES["word2vec"].train(first.ctx)
    RECIPES["word2vec"].train(second.ctx)
    a = load_word_vectors(first.ctx.output_dir)
    b = load_word_vectors(second.ctx.output_dir)
    assert a.words == b.words
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_a_cancelled_run_resumed_from_its_checkpoint_ends_with_the_same_vectors(
    lee: list[dict[str, str]], tmp_path: Path
) -> None:
    whole = make_job(tmp_path / "whole", lee, TINY)
    RECIPES["word2vec"].train(whole.ctx)

    # Cancelled in the middle of epoch 2: the recipe stops within that epoch.
    asked = 0

    def cancel_in_epoch_two() -> bool:
        nonlocal asked
        asked += 1
        return len(interrupted.checkpoints) == 1 and asked > 400

    interrupted = make_job(tmp_path / "cut", lee, TINY, should_stop=cancel_in_epoch_two)
    with pytest.raises(TrainingStopped, match="during epoch 2"):
        RECIPES["word2vec"].train(interrupted.ctx)
    assert [c.epoch for c in interrupted.checkpoints] == [1]
    assert not (interrupted.ctx.output_dir / "vectors.safetensors").exists()

    resumed = make_job(tmp_path / "cut", lee, TINY, resume_from=interrupted.checkpoints[-1])
    RECIPES["word2vec"].train(resumed.ctx)
    assert [epoch for _, epoch, _ in resumed.metrics] == [2, 3]
    np.testing.assert_array_equal(
        load_word_vectors(resumed.ctx.output_dir).vectors,
        load_word_vectors(whole.ctx.output_dir).vectors,
    )


# -- hyperparameters and data -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"architecture": "glove"}, "'architecture' must be one of skipgram, cbow"),
        ({"vector_size": 0}, "'vector_size' must be at least 1"),
        ({"negative": 0}, "'negative' must be at least 1"),
        ({"window": 2.5}, "'window' must be an integer"),
        ({"sample": -1e-3}, "'sample' must be 0 or more"),
        ({"min_learning_rate": 0.1}, "'min_learning_rate' must not exceed 'learning_rate'"),
        ({"normalize": "l1"}, "'normalize' must be one of l2, none"),
        ({"epochs": 3}, "unknown hyperparameters for recipe 'word2vec': epochs"),
    ],
)
def test_bad_hyperparameters_are_refused_at_resolve(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RECIPES["word2vec"].resolve(given, 100)


def test_texts_without_frequent_enough_words_fail_with_the_fix(tmp_path: Path) -> None:
    examples = [{"text": f"word{i} other{i}"} for i in range(300)]
    job = make_job(tmp_path, examples, {"min_count": 2})
    with pytest.raises(ValueError, match="no word occurs 2 times in the training texts"):
        RECIPES["word2vec"].train(job.ctx)
    with pytest.raises(ValueError, match="hold no words"):
        training_sentences([{"text": "... !!! ---"}], WordTokenizer())


def test_long_texts_are_cut_into_pieces_gensim_trains_whole() -> None:
    sentences = training_sentences([{"text": "word " * 25_000}], WordTokenizer())
    assert [len(sentence) for sentence in sentences] == [10_000, 10_000, 5_000]


def test_the_tokenizer_keeps_lowercase_words_and_inner_apostrophes() -> None:
    tokenizer = WordTokenizer()
    assert tokenizer.words("Don\u2019t PANIC, Arthur: 42!") == ["don't", "panic", "arthur", "42"]
    assert tokenizer.words("The U.S.-led talks_2001 cost 3.14") == [
        "the",
        "u",
        "s",
        "led",
        "talks",
        "2001",
        "cost",
        "3",
        "14",
    ]
    # NFKC: fullwidth letters and ligatures become plain ones.
    assert tokenizer.words("\uff26ull \ufb01ne Café 'quoted'") == ["full", "fine", "café", "quoted"]
    assert tokenizer.words("") == []
    assert WordTokenizer.from_dict(tokenizer.to_dict()) == tokenizer
    with pytest.raises(ValueError, match="unknown word tokenizer 'regex'"):
        WordTokenizer.from_dict({"name": "regex", "pattern": ".*"})
