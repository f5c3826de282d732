"""The rules runtime: VADER, langid.py, TextRank and Apertium as the catalog registers them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from openmaas.errors import InvalidRequest, ModelLoadFailed, UnsupportedLanguage, WrongTask
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource
from openmaas.runtimes.rules import (
    APERTIUM_MAX_CHARS,
    TEXTRANK_MAX_CHARS,
    VADER_MAX_CHARS,
    ApertiumModel,
    RulesRuntime,
)
from openmaas.settings import Settings
from openmaas.tasks.seq2seq import Seq2SeqParams
from tests.runtimes.conformance import check_conformance

SourceOpener = Callable[[str], ModelSource]

ARTICLE = (
    "Automatic summarization is the process of shortening a set of data computationally. "
    "The goal is to create a subset that represents the most important information. "
    "Text summarization finds the most informative sentences in a document. "
    "Image summarization finds the most representative images in a collection. "
    "Video summarization extracts the important frames from a video. "
    "Extractive methods select sentences from the original text. "
    "Abstractive methods generate new sentences that paraphrase the original. "
    "TextRank is a graph-based ranking algorithm used for extractive summarization. "
    "It builds a graph of sentences connected by word overlap. "
    "The highest ranked sentences form the summary."
)


@pytest.fixture(scope="module")
def loaded(catalog_source: SourceOpener) -> Callable[[str], LoadedModel]:
    """Each catalog model loaded once (after the conformance checks) for this module."""
    cache: dict[str, LoadedModel] = {}

    def load(name: str) -> LoadedModel:
        if name not in cache:
            cache[name] = check_conformance(RulesRuntime(), catalog_source(name))
        return cache[name]

    return load


def top(model: LoadedModel, text: str) -> str:
    return model.classify([text])[0][0].label


def test_vader_ranks_sentiment_shares(loaded: Callable[[str], LoadedModel]) -> None:
    vader = loaded("vader")
    assert vader.labels == ("negative", "neutral", "positive")
    assert top(vader, "I love this, it is wonderful!") == "positive"
    assert top(vader, "This is terrible and I hate it.") == "negative"
    assert top(vader, "The table is in the kitchen.") == "neutral"
    assert top(vader, "") == "neutral"
    (ranking,) = vader.classify(["Great food 😍 but awful service"])
    assert sum(r.score for r in ranking) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(WrongTask):
        vader.summarize(["x"], Seq2SeqParams())


def test_vader_loads_from_a_relative_directory(
    catalog_source: SourceOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # VADER joins a relative lexicon path onto its own package directory (issue 17).
    source = catalog_source("vader")
    shutil.copytree(source.directory, tmp_path / "vader")
    monkeypatch.chdir(tmp_path)
    vader = RulesRuntime().load(replace(source, directory=Path("vader")), LoadOptions())
    assert top(vader, "I love this, it is wonderful!") == "positive"


def test_langid_identifies_languages_with_normalized_probabilities(
    loaded: Callable[[str], LoadedModel],
) -> None:
    langid = loaded("langid")
    assert len(langid.labels) == 97
    # The model is embedded in the module: the estimate is measured, not the files' size.
    assert RulesRuntime().estimate_memory_bytes(langid.source) == langid.memory_bytes > 10**7
    texts = [
        "The weather is lovely today and we are going for a walk in the park.",
        "Bonjour, je m'appelle Marie et j'habite à Paris depuis dix ans.",
        "Guten Morgen, wie geht es dir? Ich hoffe, du hast gut geschlafen.",
    ]
    rankings = langid.classify(texts)
    assert [r[0].label for r in rankings] == ["en", "fr", "de"]
    for ranking in rankings:
        assert ranking[0].score > 0.9
        assert sum(r.score for r in ranking) == pytest.approx(1.0)


def test_textrank_keeps_the_central_sentences(loaded: Callable[[str], LoadedModel]) -> None:
    textrank = loaded("textrank")
    short = "TextRank needs several sentences. This text has two."
    summary, fallback = textrank.summarize([ARTICLE, short], Seq2SeqParams())
    sentences = summary.splitlines()
    assert 1 <= len(sentences) <= 3  # about 20% of ten sentences
    assert all(s in ARTICLE for s in sentences)
    assert fallback == "TextRank needs several sentences."
    (longer,) = textrank.summarize([ARTICLE], Seq2SeqParams(ratio=0.5))
    assert len(longer.splitlines()) > len(sentences)
    with pytest.raises(InvalidRequest, match="ratio"):
        textrank.summarize([ARTICLE], Seq2SeqParams(ratio=1.5))


def test_textrank_counts_at_least_the_sentences_it_ranks(
    loaded: Callable[[str], LoadedModel],
) -> None:
    from summa.preprocessing.textcleaner import split_sentences

    textrank = loaded("textrank")
    # Its work grows with the square of the sentences: the engine refuses texts with more
    # than the server's limit, counted by the model itself.
    assert textrank.max_input_sentences == LoadOptions().max_input_sentences
    assert textrank.max_input_sentences == Settings().max_input_sentences
    assert textrank.max_input_chars == TEXTRANK_MAX_CHARS
    texts = [
        ARTICLE,
        "Dr. Smith went to the U.S. last year. He liked it!\n\nA new paragraph?  Yes",
        "no punctuation at all\nbut two lines",
        "",
    ]
    counts = textrank.count_sentences(texts)
    assert counts[0] == 10
    assert all(c >= len(split_sentences(t)) for c, t in zip(counts, texts, strict=True))
    assert counts[3] == 0
    capped = RulesRuntime().load(textrank.source, LoadOptions(max_input_sentences=5))
    assert capped.max_input_sentences == 5


def test_engines_with_superlinear_work_limit_their_texts(
    loaded: Callable[[str], LoadedModel],
) -> None:
    assert loaded("vader").max_input_chars == VADER_MAX_CHARS
    assert loaded("langid").max_input_chars is None  # linear: the server's limit is enough
    assert loaded("langid").max_input_sentences is None


@pytest.fixture(scope="module")
def apertium(loaded: Callable[[str], LoadedModel]) -> ApertiumModel:
    model = loaded("apertium-eng-spa")
    assert isinstance(model, ApertiumModel)
    return model


def test_apertium_translates_english_to_spanish(apertium: ApertiumModel) -> None:
    assert apertium.max_input_chars == APERTIUM_MAX_CHARS
    assert "eng-spa" in apertium.pairs
    assert apertium.memory_bytes > 1_000_000  # the pair's transducers
    assert RulesRuntime().estimate_memory_bytes(apertium.source) == apertium.memory_bytes
    (hello,) = apertium.translate(["hello world"], Seq2SeqParams())
    assert "hola" in hello.lower()
    english = Seq2SeqParams(source_language="en", target_language="es")
    (cats,) = apertium.translate(["I like cats."], english)
    assert cats == "Me gustan los gatos."
    spanish = Seq2SeqParams(source_language="spa", target_language="eng")
    assert "cats" in apertium.translate([cats], spanish)[0]


def test_apertium_batches_keep_texts_apart(apertium: ApertiumModel) -> None:
    texts = ["hello world", "", "The house is red", "x < y & z\nsecond line", "I like cats."]
    batch = apertium.translate(texts, Seq2SeqParams())
    assert batch == [apertium.translate([t], Seq2SeqParams())[0] for t in texts]
    assert batch[1] == ""
    assert "<" in batch[3]
    assert "&" in batch[3]


def test_apertium_refuses_pairs_it_does_not_have(apertium: ApertiumModel) -> None:
    french = Seq2SeqParams(source_language="en", target_language="fr")
    with pytest.raises(UnsupportedLanguage, match="eng-fra.*installed pairs: .*eng-spa") as info:
        apertium.translate(["hello"], french)
    assert info.value.param == "target_language"
    # Only a source: Spanish has a plain and a US-English target; the plain one is meant.
    (out,) = apertium.translate(["hola"], Seq2SeqParams(source_language="es"))
    assert out.lower() == "hello"


def test_apertium_needs_its_command_on_the_server(
    apertium: ApertiumModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ModelLoadFailed, match="apt-get install apertium"):
        RulesRuntime().load(apertium.source, LoadOptions())


def test_unknown_engines_and_mismatched_tasks_fail_to_load(
    catalog_source: SourceOpener, tmp_path: Path
) -> None:
    (tmp_path / "openmaas.json").write_text(json.dumps({"engine": "eliza"}))
    source = ModelSource.for_directory(tmp_path, task="text-classification", runtime="rules")
    with pytest.raises(ModelLoadFailed, match="eliza"):
        RulesRuntime().load(source, LoadOptions())
    textrank = catalog_source("textrank")
    with pytest.raises(ModelLoadFailed, match="serves summarization only"):
        RulesRuntime().load(replace(textrank, task="translation"), LoadOptions())
    with pytest.raises(ModelLoadFailed, match="openmaas.json"):
        RulesRuntime().load(replace(source, directory=tmp_path / "nowhere"), LoadOptions())
