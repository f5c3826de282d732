"""A classifier's labels mapped onto OpenAI's 13 moderation categories (tasks/moderation.py)."""

from __future__ import annotations

import pytest

from openmaas.errors import InvalidRequest
from openmaas.tasks.moderation import CATEGORIES, CategoryMapping, check_params
from openmaas.tasks.text_classification import LabelScore


def ranking(**scores: float) -> list[LabelScore]:
    return [LabelScore(label, score) for label, score in scores.items()]


def test_openais_thirteen_categories() -> None:
    assert len(CATEGORIES) == 13
    verdict = CategoryMapping.for_version({}).judge(ranking(safe=0.9, toxic=0.1))
    assert list(verdict.category_scores) == list(CATEGORIES)
    assert list(verdict.categories) == list(CATEGORIES)
    assert verdict.flagged is False


def test_detoxify_labels_map_by_default_and_each_category_takes_its_highest_label() -> None:
    verdict = CategoryMapping.for_version({}).judge(
        ranking(toxicity=0.7, threat=0.6, insult=0.9, identity_attack=0.2, sexual_explicit=0.1)
    )
    assert verdict.category_scores["harassment"] == 0.9  # toxicity, insult
    assert verdict.category_scores["harassment/threatening"] == 0.6
    assert verdict.category_scores["violence"] == 0.6
    assert verdict.category_scores["hate"] == 0.2
    assert verdict.category_scores["sexual"] == 0.1
    assert verdict.categories["violence"] is True
    assert verdict.categories["hate"] is False
    assert verdict.flagged is True
    assert verdict.label_scores["insult"] == 0.9


def test_koalaai_codes_and_openai_names_in_other_spellings() -> None:
    mapping = CategoryMapping.for_version({})
    assert mapping.categories_of("S3") == ("sexual/minors",)
    assert mapping.categories_of("V2") == ("violence/graphic",)
    assert mapping.categories_of("Self_Harm") == ("self-harm",)
    assert mapping.categories_of("harassment-threatening") == ("harassment/threatening",)
    assert mapping.categories_of("OK") == ()
    assert mapping.categories_of("weather") == ()


def test_the_versions_mapping_overrides_the_defaults_label_by_label() -> None:
    mapping = CategoryMapping.for_version(
        {"moderation_categories": {"spam": ["harassment"], "insult": [], "threat": "violence"}}
    )
    assert mapping.categories_of("spam") == ("harassment",)
    assert mapping.categories_of("insult") == ()
    assert mapping.categories_of("threat") == ("violence",)
    assert mapping.categories_of("toxic") == ("harassment",)  # not named: the default
    # An unmapped label still flags: the classifier's verdict, kept in its own labels.
    verdict = mapping.judge(ranking(weather=0.8, ok=0.2))
    assert verdict.flagged is True
    assert not any(verdict.categories.values())
    assert verdict.label_flags == {"weather": True}


@pytest.mark.parametrize(
    ("params", "hint"),
    [
        ({"moderation_categories": ["toxic"]}, "must map each label"),
        ({"moderation_categories": {"toxic": 3}}, "a category or a list"),
        ({"moderation_categories": {"toxic": ["rude"]}}, "'rude' is not an OpenAI"),
    ],
)
def test_a_bad_mapping_is_refused_naming_the_problem(params: dict[str, object], hint: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_params(params)
    assert hint in refused.value.message
    assert refused.value.param == "params.moderation_categories"
