"""The spaCy runtime on the packaged English pipeline, and on a blank one with a ruler."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from openmaas.errors import ModelLoadFailed, WrongTask
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.spacy import SpacyModel, SpacyRuntime
from openmaas.tasks.token_classification import Entity
from tests.runtimes.conformance import TEXTS, check_conformance

SourceOpener = Callable[[str], ModelSource]


@pytest.fixture(scope="module")
def english(catalog_source: SourceOpener) -> SpacyModel:
    model = check_conformance(SpacyRuntime(), catalog_source("en-core-web-sm"))
    assert isinstance(model, SpacyModel)
    return model


def test_en_core_web_sm_finds_people_and_places_with_exact_offsets(english: SpacyModel) -> None:
    (entities,) = english.extract_entities(["Barack Obama visited Paris"])
    assert entities == [
        Entity(text="Barack Obama", label="PERSON", start=0, end=12),
        Entity(text="Paris", label="GPE", start=21, end=26),
    ]
    found = english.extract_entities(list(TEXTS))[1]
    assert ("Angela Merkel", "PERSON") in {(e.text, e.label) for e in found}


def test_only_the_entity_recognizer_is_loaded(english: SpacyModel) -> None:
    # en_core_web_sm's recognizer has its own embedding layer: nothing else is needed.
    assert english.components == ("ner",)
    assert len(english.labels) == 18
    assert {"PERSON", "GPE", "ORG", "DATE", "MONEY"} <= set(english.labels)


def test_texts_past_spacys_max_length_are_refused_before_the_batch(english: SpacyModel) -> None:
    # spaCy raises inside the batch past max_length; the engine checks this limit first.
    assert english.max_input_chars == english._nlp.max_length == 1_000_000


def test_tokens_are_counted_by_the_spacy_tokenizer(english: SpacyModel) -> None:
    assert english.count_tokens(["Barack Obama visited Paris.", "", "don't"]) == [5, 1, 2]
    with pytest.raises(WrongTask):
        english.embed(["x"])


def test_offsets_survive_whitespace_and_unicode(english: SpacyModel) -> None:
    text = "  Zoë Müller  flew to\n\nNew York on Monday. 🙂 Then Tokyo."
    (entities,) = english.extract_entities([text])
    assert entities
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text


def test_a_pipeline_with_an_entity_ruler_is_loaded_whole(tmp_path: Path) -> None:
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "FRUIT", "pattern": [{"LOWER": "apple"}]}])
    nlp.to_disk(tmp_path / "fruit")
    source = ModelSource.for_directory(
        tmp_path / "fruit", task="token-classification", runtime="spacy", name="fruit"
    )
    model = check_conformance(SpacyRuntime(), source)
    assert model.labels == ("FRUIT",)
    assert isinstance(model, SpacyModel)
    assert model.components == ("sentencizer", "entity_ruler")
    assert model.extract_entities(["An Apple a day"]) == [[Entity("Apple", "FRUIT", 3, 8)]]


def test_directories_that_are_not_entity_pipelines_are_refused(tmp_path: Path) -> None:
    spacy = pytest.importorskip("spacy")
    spacy.blank("en").to_disk(tmp_path / "blank")
    source = ModelSource.for_directory(
        tmp_path / "blank", task="token-classification", runtime="spacy"
    )
    with pytest.raises(ModelLoadFailed, match="no entity recognizer"):
        SpacyRuntime().load(source, LoadOptions())
    with pytest.raises(ModelLoadFailed, match="config.cfg"):
        SpacyRuntime().load(
            ModelSource.for_directory(tmp_path, task="token-classification", runtime="spacy"),
            LoadOptions(),
        )
