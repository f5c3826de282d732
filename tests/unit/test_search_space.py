"""Search specs checked against a recipe (no server, no optuna), and the folds and summaries
of cross-validation."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from openmaas.errors import InvalidRequest
from openmaas.training.cross_validation import stratified_folds, summarize
from openmaas.training.recipes import RECIPES
from openmaas.training.search_space import SearchSpec

TEXTCNN = RECIPES["textcnn"]


def parse(raw: dict[str, Any], recipe: str = "textcnn") -> SearchSpec:
    return SearchSpec.parse(raw, RECIPES[recipe], given={}, n_examples=1000)


def test_a_spec_round_trips_through_the_jobs_options() -> None:
    spec = parse(
        {
            "space": {
                "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "n_filters": {"type": "int", "low": 16, "high": 64, "step": 16},
                "filter_widths": {"type": "categorical", "choices": [[3, 4, 5], [2, 3]]},
            },
            "n_trials": 7,
        }
    )
    # textcnn stops early on validation accuracy (Kim's), so its search maximizes that.
    assert (spec.metric, spec.direction, spec.n_trials) == ("val_accuracy", "maximize", 7)
    assert SearchSpec.from_dict(spec.to_dict()) == spec


def test_every_recipe_default_space_is_valid_for_its_recipe() -> None:
    declared = [recipe for recipe in RECIPES.values() if recipe.search_space]
    assert {r.name for r in declared} >= {"textcnn", "bilstm", "gru", "finetune_transformer"}
    for recipe in declared:
        spec = SearchSpec.parse({}, recipe, given={}, n_examples=1000)
        assert spec.space
    assert parse({}, "bilstm_tagger").metric == "val_f1"


def test_val_loss_is_minimized_by_default() -> None:
    space = {"dropout": {"type": "float", "low": 0.1, "high": 0.5}}
    assert parse({"space": space, "metric": "val_loss"}).direction == "minimize"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({"space": {"nope": {"type": "float", "low": 0, "high": 1}}}, "search.space.nope"),
        (
            {"space": {"dropout": {"type": "float", "low": 0.4, "high": 0.4}}},
            "search.space.dropout",
        ),
        ({"space": {"dropout": {"type": "float", "low": 0.1, "high": 2}}}, "search.space.dropout"),
        ({"space": {"dropout": {"type": "int", "low": 0, "high": 1}}}, "search.space.dropout"),
        (
            {"space": {"dropout": {"type": "float", "low": "a", "high": 1}}},
            "search.space.dropout.low",
        ),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5, "log": True}}},
            "search.space.dropout",
        ),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5, "step": 1}}},
            "search.space.dropout",
        ),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5, "x": 1}}},
            "search.space.dropout",
        ),
        (
            {"space": {"optimizer": {"type": "categorical", "choices": []}}},
            "search.space.optimizer",
        ),
        (
            {"space": {"optimizer": {"type": "categorical", "choices": ["sgd", "sgd"]}}},
            "search.space.optimizer",
        ),
        (
            {"space": {"optimizer": {"type": "categorical", "choices": [1]}}},
            "search.space.optimizer",
        ),
        ({"space": {"augment": {"type": "float", "low": 0, "high": 1}}}, "search.space.augment"),
        (
            {"space": {"filter_widths": {"type": "categorical", "choices": [[3, "a"]]}}},
            "search.space.filter_widths",
        ),
        ({"space": {"n_filters": {"type": "int", "low": 0, "high": 8}}}, "search.space.n_filters"),
        ({"space": []}, "search.space"),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5, "step": 0.2}}},
            "search.space.dropout",
        ),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5}}, "metric": "accuracy"},
            "search.metric",
        ),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5}}, "metric": "val_bleu"},
            "search.metric",
        ),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5}}, "n_trials": 0},
            "search.n_trials",
        ),
        (
            {"space": {"dropout": {"type": "float", "low": 0, "high": 0.5}}, "direction": "up"},
            "search.direction",
        ),
        ({"spaces": {}}, "search.spaces"),
    ],
)
def test_a_bad_spec_names_its_parameter(raw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(raw)
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_a_recipe_without_a_default_space_asks_for_one() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse({}, "word2vec")
    assert caught.value.param == "search.space"


def test_folds_are_stratified_disjoint_and_cover_every_example() -> None:
    examples = [{"text": str(i), "label": "a" if i % 4 else "b"} for i in range(103)]
    folds = stratified_folds(examples, 5, seed=3, task="text-classification")
    assert sorted(i for fold in folds for i in fold) == list(range(103))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    share = [sum(examples[i]["label"] == "b" for i in fold) for fold in folds]
    assert max(share) - min(share) <= 1  # each fold holds its part of the rarer label
    assert folds == stratified_folds(examples, 5, seed=3, task="text-classification")
    assert folds != stratified_folds(examples, 5, seed=4, task="text-classification")


def test_the_summary_holds_the_mean_and_deviation_of_every_shared_metric() -> None:
    folds = [{"accuracy": 0.8, "loss": 0.5}, {"accuracy": 0.9, "loss": 0.3}, {"accuracy": 0.7}]
    summary = summarize(folds)
    assert set(summary) == {"cv_accuracy_mean", "cv_accuracy_std"}
    assert summary["cv_accuracy_mean"] == pytest.approx(0.8)
    assert summary["cv_accuracy_std"] == pytest.approx(statistics.pstdev([0.8, 0.9, 0.7]))
