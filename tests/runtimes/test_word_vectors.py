"""The word2vec runtime on vectors trained in the test (gensim's Lee corpus, 3 epochs, 16
dimensions): conformance, a text as the mean of its known words' vectors, the vocabulary's
mean for a text without one, tokens counted as words, registry detection, and load failures
that name the problem."""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from openmaas.auth.entities import SYSTEM
from openmaas.errors import ModelLoadFailed
from openmaas.registry.composition import Registry
from openmaas.registry.registration import VersionSpec
from openmaas.registry.sources import plan_directory
from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
from openmaas.runtimes.word_vectors import WordVectorsModel, WordVectorsRuntime
from openmaas.training.recipe import TrainingContext
from openmaas.training.recipes import RECIPES
from openmaas.word_vectors.saved import load_word_vectors
from tests.runtimes.conformance import check_conformance

pytest.importorskip("gensim")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lee = importlib.resources.files("gensim").joinpath("test/test_data/lee_background.cor")
    examples = [{"text": line} for line in lee.read_text(encoding="utf-8").splitlines()]
    root = tmp_path_factory.mktemp("word2vec")
    given = {"vector_size": 16, "min_count": 3, "n_epochs": 3, "analogy_vocab_size": 0}
    ctx = TrainingContext(
        job_id="lee",
        task="embedding",
        train=examples[:270],
        validation=[],
        test=examples[270:],
        hyperparameters=RECIPES["word2vec"].resolve(given, 270),
        seed=0,
        output_dir=root / "model",
        work_dir=root / "work",
    )
    RECIPES["word2vec"].train(ctx)
    return ctx.output_dir


def _source(directory: Path, normalize: str | None = None) -> ModelSource:
    params = {"normalize": normalize} if normalize is not None else {}
    return ModelSource.for_directory(
        directory, task="embedding", runtime="word2vec", name="lee", params=params
    )


@pytest.mark.parametrize("normalize", [None, "none"])
def test_conformance(trained: Path, normalize: str | None) -> None:
    model = check_conformance(WordVectorsRuntime(), _source(trained, normalize))
    assert isinstance(model, WordVectorsModel)
    assert model.embedding_dimensions == 16
    assert model.max_input_tokens is None
    norms = np.linalg.norm(model.embed(["the fire spread", "police said"]), axis=1)
    if normalize is None:  # the model's own setting: l2
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    else:
        assert not np.allclose(norms, 1.0)
    model.unload()


def test_a_text_is_the_mean_of_its_known_words_vectors(trained: Path) -> None:
    saved = load_word_vectors(trained)
    rows = {word: row for row, word in enumerate(saved.words)}
    model = WordVectorsRuntime().load(_source(trained, "none"), LoadOptions())
    expected = (saved.vectors[rows["fire"]] + saved.vectors[rows["police"]]) / 2
    # Case and punctuation do not matter; words without a vector are skipped.
    for text in ("fire police", "FIRE, police!", "fire zzqxw police"):
        np.testing.assert_allclose(model.embed([text])[0], expected, rtol=1e-6)


def test_a_text_without_known_words_gets_the_vocabulary_mean(trained: Path) -> None:
    saved = load_word_vectors(trained)
    model = WordVectorsRuntime().load(_source(trained), LoadOptions())
    empty, unknown, known = model.embed(["", "zzqxw qqqv", "fire"])
    np.testing.assert_array_equal(empty, unknown)
    centroid = saved.vectors.mean(axis=0)
    np.testing.assert_allclose(empty, centroid / np.linalg.norm(centroid), rtol=1e-5)
    assert np.linalg.norm(empty) == pytest.approx(1.0, abs=1e-5)  # never a zero vector
    assert not np.allclose(empty, known)


def test_tokens_are_counted_as_words(trained: Path) -> None:
    model = WordVectorsRuntime().load(_source(trained), LoadOptions())
    assert model.count_tokens(["Don't panic, Arthur!", "", "3.14"]) == [3, 1, 2]
    assert model.count_tokens([]) == []


def test_memory_estimate_is_close_to_the_loaded_size(trained: Path) -> None:
    runtime = WordVectorsRuntime()
    source = _source(trained)
    model = runtime.load(source, LoadOptions())
    assert 0.5 < runtime.estimate_memory_bytes(source) / model.memory_bytes < 2


def test_the_registry_detects_the_format_and_get_runtime_finds_it(
    trained: Path, registry: Registry
) -> None:
    version = registry.registration.register_plan(
        "lee", plan_directory(trained), VersionSpec(), caller=SYSTEM
    )
    assert (version.task, version.runtime, version.format) == (
        "embedding",
        "word2vec",
        "safetensors",
    )
    opened, directory = registry.files.open_stored("lee", caller=SYSTEM)
    model = get_runtime("word2vec").load(ModelSource.from_version(opened, directory), LoadOptions())
    assert model.embed(["bushfires near Sydney"]).shape == (1, 16)


def test_broken_directories_fail_to_load_with_the_reason(trained: Path, tmp_path: Path) -> None:
    runtime = WordVectorsRuntime()
    copy = shutil.copytree(trained, tmp_path / "model")
    spec = json.loads((copy / "openmaas.json").read_text())
    vocabulary = json.loads((copy / "vocabulary.json").read_text())
    vectors = load_word_vectors(trained).vectors

    def write_spec(**changes: object) -> None:
        (copy / "openmaas.json").write_text(json.dumps({**spec, **changes}))

    write_spec(dimensions=32)
    with pytest.raises(
        ModelLoadFailed, match="holds 16-dimensional vectors; openmaas.json says 32"
    ):
        runtime.load(_source(copy), LoadOptions())

    write_spec(tokenizer={"name": "regex", "pattern": "(a+)+$"})
    with pytest.raises(ModelLoadFailed, match="unknown word tokenizer 'regex'"):
        runtime.load(_source(copy), LoadOptions())

    write_spec()
    with pytest.raises(ModelLoadFailed, match="param normalize must be one of l2, none"):
        runtime.load(_source(copy, "cosine"), LoadOptions())

    short = {"words": vocabulary["words"][:-1], "counts": vocabulary["counts"][:-1]}
    (copy / "vocabulary.json").write_text(json.dumps(short))
    with pytest.raises(ModelLoadFailed, match="each word needs one count and one vector"):
        runtime.load(_source(copy), LoadOptions())

    (copy / "vocabulary.json").write_text(json.dumps(vocabulary))
    broken = vectors.copy()
    broken[3, 0] = np.nan
    save_file({"vectors": broken}, str(copy / "vectors.safetensors"))
    with pytest.raises(ModelLoadFailed, match="NaN or infinite"):
        runtime.load(_source(copy), LoadOptions())

    (copy / "vectors.safetensors").unlink()
    with pytest.raises(ModelLoadFailed, match=r"lee:1: cannot load the word vectors.*safetensors"):
        runtime.load(_source(copy), LoadOptions())

    wrong_task = ModelSource.for_directory(trained, task="text-classification", runtime="word2vec")
    with pytest.raises(ModelLoadFailed, match="serves embedding only"):
        runtime.load(wrong_task, LoadOptions())
